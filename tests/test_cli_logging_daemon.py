"""``run`` as a real process, as an operator first starts it: what it logs at the default
level and in JSON, and what ``/metrics`` carries."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.daemon_helpers import get, metric_value, simulator_process, wait_for, write_config

pytestmark = pytest.mark.slow


@contextmanager
def daemon(*args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``exposure-monitor ARGS`` with stderr into ``log``; stopped with SIGTERM at the end."""
    with (
        log.open("wb") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "monitor", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={k: v for k, v in os.environ.items() if k != "ONEINCH_API_KEY"},
        ) as proc,
    ):
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def polled(metrics_url: str) -> bool:
    return (metric_value(metrics_url, "exposure_monitor_polls_total") or 0) >= 2


def test_run_logs_that_it_listens_at_the_default_level_without_library_chatter(
    tmp_path: Path,
) -> None:
    log = tmp_path / "daemon.log"
    with simulator_process() as base_url:
        config, metrics_url = write_config(tmp_path / "config.yaml", base_url)
        with daemon("run", "--config", str(config), log=log):
            wait_for(lambda: polled(metrics_url), 30, "two polls")
            status, text = get(metrics_url + "/metrics")
    assert status == 200
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")
    }
    assert "exposure_monitor_polls_total" in names
    assert not [name for name in names if name.endswith("_created")]

    logged = log.read_text()
    assert f"INFO monitor.daemon.run: listening on {metrics_url}" in logged, logged
    assert re.search(
        r" INFO monitor\.daemon\.poll_cycle: poll 1 ok in [\d.]+s: \d+ positions", logged
    )
    # APScheduler logs each job run at info ("Running job", "executed successfully"): not
    # at the default level.
    assert "apscheduler" not in logged, logged
    assert "Traceback" not in logged


def test_log_level_and_format_after_the_command_give_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    with simulator_process() as base_url:
        config, metrics_url = write_config(tmp_path / "config.yaml", base_url)
        with daemon(
            "run", "--config", str(config), "--log-level", "debug", "--log-format", "json", log=log
        ):
            wait_for(lambda: polled(metrics_url), 30, "two polls")
    lines = log.read_text().splitlines()
    assert lines
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)
        assert entry["time"].endswith("Z")
    assert {
        "logger": "monitor.daemon.run",
        "level": "info",
        "message": f"listening on {metrics_url}",
    }.items() <= next(e for e in entries if e["message"].startswith("listening on")).items()
    # debug lets the libraries speak too
    assert any(e["logger"].startswith("apscheduler") for e in entries)
    assert any(e["level"] == "debug" for e in entries)
