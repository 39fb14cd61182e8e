"""``/metrics`` latency of the real daemon (``exposure-monitor run`` as a process) while it
polls the large portfolio, and while it is idle (the floor: the same daemon, the same data,
no poll running).

The daemon's own counters tell where it stands: ``exposure_monitor_polls_total`` goes up when
a poll starts and ``exposure_monitor_poll_duration_seconds_count`` when it ends. A scrape
counts as "during poll k" when poll k was running at the previous scrape's answer or at its
own; "idle" only once a poll has finished, and "restore" before the first one begins.
Scrapes are sequential (like Prometheus'), at most ``max_per_poll`` in each state.
"""

# ruff: noqa: S603 - the process started here is our own (the daemon)

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.processes import ROOT, free_port

POLLS = b"\nexposure_monitor_polls_total "
DONE = b"\nexposure_monitor_poll_duration_seconds_count "
DURATION_SUM = b"\nexposure_monitor_poll_duration_seconds_sum "
RESTORING = "restore"
"""The state of a scrape made before the first poll began (the daemon restores meanwhile)."""


@dataclass
class ScrapeLog:
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    bytes_: dict[str, list[int]] = field(default_factory=dict)
    failures: int = 0
    poll_wall_s: dict[int, float] = field(default_factory=dict)

    def add(self, state: str, latency_ms: float, size: int) -> None:
        self.latencies_ms.setdefault(state, []).append(latency_ms)
        self.bytes_.setdefault(state, []).append(size)


def _value(body: bytes, name: bytes) -> float | None:
    at = body.find(name)
    if at < 0:
        return None
    end = body.find(b"\n", at + len(name))
    return float(body[at + len(name) : end])


def scrape_once(host: str, port: int, path: str, timeout_s: float) -> tuple[float, int, bytes]:
    """GET ``path`` asking for gzip, as Prometheus does; the latency is to the last byte of the
    body (what a scraper waits). Returns the latency, the bytes on the wire, the text."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        started = time.perf_counter()
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        body = response.read()
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise OSError(f"{path}: HTTP {response.status}")
        wire = len(body)
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return latency_ms, wire, body
    finally:
        conn.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Daemon:
    """A running ``exposure-monitor run``."""

    host: str
    port: int
    log_path: Path
    pid: int
    start_to_listening_s: float
    """From spawning the process to its first answer to ``GET /healthz`` (asked every
    ``HEALTHZ_EVERY_S``): interpreter start, imports, config, database, restore, listener."""


HEALTHZ_EVERY_S = 0.02


@contextlib.contextmanager
def daemon(config_doc: dict[str, Any], folder: Path) -> Iterator[Daemon]:
    """``exposure-monitor run`` with ``config_doc``, yielded once it answers ``/healthz``."""
    port = free_port()
    config_doc = {**config_doc, "metrics": {"listen": f"127.0.0.1:{port}"}}
    config_path = folder / "daemon.yaml"
    config_path.write_text(yaml.safe_dump(config_doc, sort_keys=False))
    log_path = folder / "daemon.log"
    with open(log_path, "w") as log:
        started = time.perf_counter()
        with subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "--log-level",
                "info",
                "run",
                "--config",
                str(config_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        ) as proc:
            try:
                deadline = started + 300
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"daemon exited ({proc.returncode}): {log_path.read_text()[-2000:]}"
                        )
                    with contextlib.suppress(OSError):
                        scrape_once("127.0.0.1", port, "/healthz", 5)
                        break
                    if time.perf_counter() > deadline:
                        raise RuntimeError("daemon did not start listening within 300 s")
                    time.sleep(HEALTHZ_EVERY_S)
                yield Daemon(
                    host="127.0.0.1",
                    port=port,
                    log_path=log_path,
                    pid=proc.pid,
                    start_to_listening_s=time.perf_counter() - started,
                )
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


def scrape_polls(
    host: str,
    port: int,
    *,
    polls: int,
    max_per_poll: int,
    idle_after: int,
    pause_s: float,
    timeout_s: float,
    deadline_s: float,
) -> ScrapeLog:
    """Scrape until ``polls`` polls have finished and ``idle_after`` more scrapes were made
    with no poll running (or until ``deadline_s``)."""
    log = ScrapeLog()
    previous_running: int | None = None
    seconds_done = 0.0
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            latency_ms, wire, body = scrape_once(host, port, "/metrics", timeout_s)
        except OSError:
            log.failures += 1
            time.sleep(pause_s)
            continue
        begun = int(_value(body, POLLS) or 0)
        done = int(_value(body, DONE) or 0)
        running = begun if begun > done else None
        if done and done not in log.poll_wall_s:
            total = _value(body, DURATION_SUM) or 0.0
            log.poll_wall_s[done] = total - seconds_done
            seconds_done = total
        poll = running or previous_running
        # Before the first poll the daemon is restoring the stored state in the background:
        # neither a poll nor the idle floor (same data, nothing running).
        state = f"poll {poll}" if poll is not None else "idle" if done else RESTORING
        if len(log.latencies_ms.get(state, [])) < max_per_poll:
            log.add(state, latency_ms, wire)
        previous_running = running
        if done >= polls and len(log.latencies_ms.get("idle", [])) >= idle_after:
            break
        time.sleep(pause_s)
    return log


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
