"""Real processes for end-to-end tests: the simulator and the daemon, on free loopback ports."""

from __future__ import annotations

import contextlib
import json
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


# -- helpers for the reliability suite (tests/reliability) ------------------------------------


def start_daemon(
    config: Path,
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    log_level: str = "info",
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """``exposure-monitor run`` started and left to the caller (who must reap it).

    stderr (the log) is appended to ``log``; ``user`` runs it as another (unprivileged) user.
    """
    stderr = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "--log-level",
                log_level,
                "run",
                "--config",
                str(config),
            ],
            stdout=stderr,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            user=user,
        )
    finally:
        if log:
            stderr.close()  # type: ignore[union-attr]


def stop_daemon(proc: subprocess.Popen[bytes], timeout_s: float = 40) -> int:
    """SIGTERM, then wait; SIGKILL if it does not exit. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _json_request(url: str, method: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def add_fault(base_url: str, **fault: Any) -> dict[str, Any]:
    """``POST /_simulator/faults`` on a simulator process."""
    return dict(_json_request(base_url + "/_simulator/faults", "POST", fault))


def clear_faults(base_url: str) -> int:
    return int(_json_request(base_url + "/_simulator/faults", "DELETE")["cleared"])


def simulator_state(base_url: str) -> dict[str, Any]:
    return dict(_json_request(base_url + "/_simulator/state", "GET"))


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def metric_value(metrics_url: str, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels`` (None when absent)."""
    _, text = get(metrics_url + "/metrics")
    found = [
        value
        for sample_labels, value in metric_samples(text, name)
        if all(sample_labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``exposure-monitor ARGS`` run to completion."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
