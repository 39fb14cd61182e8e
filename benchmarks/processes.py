"""Real processes on loopback: the simulator, the daemon, and the benchmark's own workers."""

# ruff: noqa: S603 - every process started here is our own (the simulator, a worker)

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[Any], timeout_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Simulator:
    """``exposure-monitor simulate`` serving a scenario file, in its own process."""

    def __init__(self, scenario: Path, base_url: str, proc: subprocess.Popen[str]) -> None:
        self.scenario = scenario
        self.base_url = base_url
        self.pid = proc.pid

    def monitor_config(self) -> dict[str, Any]:
        """``simulate --print-config``: a monitor config document watching the scenario."""
        host_port = self.base_url.removeprefix("http://")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "monitor",
                "simulate",
                "--scenario",
                str(self.scenario),
                "--listen",
                host_port,
                "--print-config",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        doc: dict[str, Any] = yaml.safe_load(out)
        return doc

    def state(self) -> dict[str, Any]:
        """``GET /_simulator/state``: request counts by status, poll counters."""
        with urllib.request.urlopen(f"{self.base_url}/_simulator/state", timeout=30) as reply:  # noqa: S310 (loopback)
            data: dict[str, Any] = json.loads(reply.read())
        data.pop("poll_counts", None)  # one entry per (chain, spender, wallet): not needed
        return data


@contextlib.contextmanager
def simulator(scenario_doc: dict[str, Any], path: Path) -> Iterator[Simulator]:
    """Write ``scenario_doc`` to ``path`` and serve it on a free loopback port."""
    path.write_text(yaml.safe_dump(scenario_doc, sort_keys=False))
    args = [
        sys.executable,
        "-m",
        "monitor",
        "simulate",
        "--scenario",
        str(path),
        "--listen",
        "127.0.0.1:0",
    ]
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("simulator listening on "):
                _stop(proc)
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"simulator did not start: {line!r} {err}")
            yield Simulator(path, line.split()[-1], proc)
        finally:
            _stop(proc)


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``python -m benchmarks.worker`` in a fresh process (so memory peaks never mix)
    with ``spec`` on stdin; return the JSON it prints. Its progress goes to our stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker"],
        input=json.dumps(spec),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed (exit {proc.returncode}); see above")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
