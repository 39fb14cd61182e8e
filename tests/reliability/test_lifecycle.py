"""Item 4 (part): SIGTERM during a slow poll exits 0 within poll.shutdown_grace_s + a margin."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import (
    add_fault,
    get,
    simulator_process,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.reliability.common import daemon_config, write_scenario

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

GRACE_S = 2
MARGIN_S = 3


def test_sigterm_during_a_slow_poll_exits_0_within_the_grace(tmp_path: Path) -> None:
    scenario = write_scenario(
        tmp_path / "scenario.yaml",
        {"generate": {"seed": 3, "chains": [1], "wallets": 2, "tokens": 2, "spenders": 1}},
    )
    with simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path,
            scenario,
            base_url,
            api={"timeout_s": 60, "requests_per_second": 100},
            poll={"interval_s": 30, "timeout_s": 30, "shutdown_grace_s": GRACE_S},
        )
        # Every answer takes 40 s: a poll that would outlive any sane shutdown.
        add_fault(base_url, endpoint="aggregated", body="ok", delay_s=40)
        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: get(metrics_url + "/healthz")[0] == 200, 30, "the listener")
            # The poll is in flight once the simulator holds a request (answers not written).
            wait_for(
                lambda: b"polls_total 1.0" in get(metrics_url + "/metrics")[1].encode(),
                10,
                "a poll in flight",
            )
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=GRACE_S + MARGIN_S + 10)
            took = time.monotonic() - started
        finally:
            stop_daemon(daemon)
    log = (tmp_path / "daemon.log").read_text()
    assert code == 0, log[-3000:]
    assert took <= GRACE_S + MARGIN_S, f"exit took {took:.1f}s"
    assert "cancelled" in log, log[-2000:]
    print(f"\nSIGTERM during a 40 s poll: exit 0 after {took:.2f}s (grace {GRACE_S}s)")


def test_a_poll_that_finishes_within_the_grace_is_completed_and_recorded(tmp_path: Path) -> None:
    scenario = write_scenario(
        tmp_path / "scenario.yaml",
        {"generate": {"seed": 3, "chains": [1], "wallets": 2, "tokens": 2, "spenders": 1}},
    )
    grace_s = 6
    with simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path,
            scenario,
            base_url,
            api={"timeout_s": 60, "requests_per_second": 100},
            poll={"interval_s": 30, "timeout_s": 30, "shutdown_grace_s": grace_s},
        )
        # Each answer takes 2 s: the poll in flight ends well inside the grace period.
        add_fault(base_url, endpoint="aggregated", body="ok", delay_s=2)
        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        try:
            wait_for(
                lambda: b"polls_total 1.0" in get(metrics_url + "/metrics")[1].encode(),
                20,
                "a poll in flight",
            )
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=grace_s + MARGIN_S + 10)
            took = time.monotonic() - started
        finally:
            stop_daemon(daemon)
    log = (tmp_path / "daemon.log").read_text()
    assert code == 0, log[-3000:]
    assert "cancelled" not in log, log[-2000:]
    assert "poll 1 ok" in log, log[-2000:]
    assert took < grace_s, f"exit took {took:.1f}s"
