"""Real processes for end-to-end tests: the simulator and the daemon, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def simulator_process(scenario: Path | None = None) -> Iterator[str]:
    """``exposure-monitor simulate`` as a real process; yields its base URL."""
    args = [sys.executable, "-m", "monitor", "simulate", "--listen", "127.0.0.1:0"]
    if scenario is not None:
        args += ["--scenario", str(scenario)]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("simulator listening on "), line + (
                proc.stderr.read() if proc.stderr else ""
            )
            yield line.split()[-1]
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def write_config(path: Path, base_url: str, **sections: dict[str, Any]) -> tuple[Path, str]:
    """The example config pointed at ``base_url``, with overrides; returns (path, metrics URL)."""
    doc = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    doc["api"]["base_url"] = base_url
    doc["api"]["requests_per_second"] = 100
    port = free_port()
    doc["metrics"] = {"listen": f"127.0.0.1:{port}"}
    doc["database"] = {"url": f"sqlite+aiosqlite:///{path.parent / 'monitor.sqlite'}"}
    doc["poll"] = {"interval_s": 1}
    for key, value in sections.items():
        doc.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(doc))
    return path, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def daemon_process(
    config: Path, *, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``exposure-monitor run`` as a real process. Killed if the test leaves it running."""
    stderr = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        with subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "--log-level",
                "info",
                "run",
                "--config",
                str(config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        ) as proc:
            try:
                yield proc
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        if log:
            stderr.close()  # type: ignore[union-attr]


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if condition():
                return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
