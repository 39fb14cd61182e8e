"""Real processes on loopback: the simulator, the daemon, and the benchmark's own workers."""

# ruff: noqa: S603 - every process started here is our own (the simulator, a worker)

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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

    def monitor_config(self, *, discovery: bool = True) -> dict[str, Any]:
        """``simulate --print-config``: a monitor config document watching the scenario.

        ``discovery`` False: without chain discovery (which ``--print-config`` turns on for
        every chain), so that the 1inch workloads measure the 1inch poll alone, as the
        worker, which wires no chain reader, does."""
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
        if not discovery:
            for chain in doc["chains"]:
                chain.pop("discovery", None)
            doc["chains"] = [c for c in doc["chains"] if c.get("spenders")]
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildRun:
    """A command run to completion: its CPU (user + system), wall time and exit status."""

    cpu_s: float
    wall_s: float
    returncode: int
    stderr_tail: str


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(args: Sequence[str], *, timeout_s: float = 600) -> ChildRun:
    """Run ``args`` from the repository root with stdout discarded, and measure its CPU as
    the growth of ``RUSAGE_CHILDREN`` (children reaped in between: this one only, since the
    benchmark reaps its simulators and workers at other moments, and never in a thread)."""
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    proc = subprocess.run(
        list(args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        timeout=timeout_s,
        check=False,
    )
    return ChildRun(
        cpu_s=_children_cpu_s() - cpu_before,
        wall_s=time.perf_counter() - started,
        returncode=proc.returncode,
        stderr_tail=proc.stderr[-2000:],
    )


def interpreter_start_cpu_s(runs: int = 5) -> float:
    """CPU of ``python -c pass`` with this interpreter and environment (median of ``runs``):
    what any Python command costs before it does anything."""
    return statistics.median(
        run_measured([sys.executable, "-c", "pass"]).cpu_s for _ in range(runs)
    )


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM of a running process (Linux), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
