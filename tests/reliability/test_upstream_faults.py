"""Item 1: upstream faults through the simulator's knobs, against the daemon as a process.

The scenario never changes (no churn, every position non-zero), so after the baseline poll
any recorded change event is a fault turned into data: above all a failed batch recorded as a
revoke. The simulator enforces the same request rate as the daemon is configured for, so a
daemon that retries faster than its limit gets 429s from the simulator's own limiter; the
injected 429s are bounded (``count``), so every other 429 is such a violation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_helpers import (
    add_fault,
    clear_faults,
    get,
    simulator_process,
    simulator_state,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.reliability.common import (
    daemon_config,
    db_check,
    failed_total,
    history,
    scrape,
    sqlite_rows,
    value,
    write_scenario,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

RATE = 40
SCENARIO = {
    "generate": {"seed": 11, "chains": [1], "wallets": 6, "tokens": 4, "spenders": 3},
    "requests_per_second": RATE,
    "behaviour": {"max_wallets_per_request": 2},
}
UP = "exposure_monitor_upstream_up"
LAST = "exposure_monitor_last_successful_poll_timestamp_seconds"

# (name, faults to add, reasons a failed poll may be counted under, cleared by the test?)
PHASES: list[tuple[str, list[dict[str, Any]], set[str], bool]] = [
    ("429 storm, no Retry-After", [{"endpoint": "aggregated", "status": 429, "count": 60}], {"rate_limited", "timeout"}, False),
    ("429 storm, Retry-After 1", [{"endpoint": "aggregated", "status": 429, "retry_after_s": 1, "count": 6}], {"rate_limited", "timeout"}, False),
    ("5xx burst", [{"endpoint": "aggregated", "status": 503, "count": 12}], {"unavailable", "timeout"}, False),
    ("5xx until cleared", [{"endpoint": "aggregated", "status": 500}], {"unavailable", "timeout"}, True),
    ("hang past the timeout", [{"endpoint": "aggregated", "body": "ok", "delay_s": 5}], {"timeout"}, True),
    ("truncated JSON", [{"endpoint": "aggregated", "body": "truncated"}], {"bad_response", "timeout"}, True),
    ("not JSON", [{"endpoint": "aggregated", "body": "not_json"}], {"bad_response", "timeout"}, True),
    ("CDN HTML page", [{"endpoint": "aggregated", "body": "html"}], {"unavailable", "bad_response", "timeout"}, True),
    ("non-numeric amount", [{"endpoint": "aggregated", "body": "non_numeric_amount", "bad_amount": "abc"}], {"bad_response", "timeout"}, True),
]  # fmt: skip


def wait_scrape(
    metrics_url: str, condition: Callable[[str], bool], timeout_s: float, what: str
) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = scrape(metrics_url)
        if condition(text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def last_success(text: str) -> dict[str, float]:
    from tests.daemon_helpers import metric_samples

    return {labels["spender"]: v for labels, v in metric_samples(text, LAST)}


def polls(text: str) -> float:
    return value(text, "exposure_monitor_polls_total") or 0


def test_upstream_faults_are_survived_counted_never_recorded_and_recovered(
    tmp_path: Path,
) -> None:
    scenario = write_scenario(tmp_path / "scenario.yaml", SCENARIO)
    injected_429 = 0
    with simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path,
            scenario,
            base_url,
            api={
                "requests_per_second": RATE,
                "timeout_s": 0.3,
                "max_attempts": 3,
                "backoff_initial_s": 0.02,
                "backoff_max_s": 0.1,
                "retry_after_max_s": 2,
            },
            poll={"interval_s": 1, "timeout_s": 1},
        )
        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: get(metrics_url + "/healthz")[0] == 200, 30, "the listener")
            text = wait_scrape(
                metrics_url, lambda t: value(t, UP, chain_id="1") == 1, 30, "a good poll"
            )
            for name, faults, reasons, cleared_by_test in PHASES:
                before = last_success(text)
                failed_before = failed_total(text)
                for fault in faults:
                    add_fault(base_url, **fault)
                    if fault.get("status") == 429:
                        injected_429 += fault["count"]
                text = wait_scrape(
                    metrics_url,
                    lambda t: value(t, UP, chain_id="1") == 0,
                    20,
                    f"{name}: upstream_up 0",
                )
                failed = failed_total(text)
                grown = {r for r, v in failed.items() if v > failed_before.get(r, 0)}
                assert grown, f"{name}: no failed poll counted"
                assert grown <= reasons, f"{name}: counted as {grown}, expected {reasons}"
                # Stale: the failing spenders' last success did not move (a bounded burst may
                # spare some spenders; a fault until cleared spares none).
                stale = {s for s, v in last_success(text).items() if v == before[s]}
                assert stale if not cleared_by_test else stale == set(before), (name, stale)
                if cleared_by_test:
                    seen = polls(text)
                    wait_scrape(
                        metrics_url,
                        lambda t, s=seen: polls(t) >= s + 2,
                        20,
                        f"{name}: two more polls",
                    )
                    text = scrape(metrics_url)
                    assert value(text, UP, chain_id="1") == 0, name
                    assert last_success(text) == before, (
                        f"{name}: last success moved during the fault"
                    )
                    clear_faults(base_url)
                text = wait_scrape(
                    metrics_url,
                    lambda t, b=before: (
                        value(t, UP, chain_id="1") == 1
                        and all(v > b[s] for s, v in last_success(t).items())
                    ),
                    30,
                    f"{name}: recovery",
                )
                assert not simulator_state(base_url)["faults"], name

            # One batch failing out of many: spender-1's batch with wallet-3 only.
            cfg_doc = __import__("yaml").safe_load(config.read_text())
            spenders = [s["address"].lower() for s in cfg_doc["chains"][0]["spenders"]]
            wallet = cfg_doc["wallets"][3]["address"].lower()
            before = last_success(text)
            add_fault(
                base_url, endpoint="aggregated", spender=spenders[1], wallet=wallet, status=500
            )
            text = wait_scrape(
                metrics_url, lambda t: value(t, UP, chain_id="1") == 0, 20, "a partial poll"
            )
            wait_scrape(
                metrics_url,
                lambda t: all(last_success(t)[s] > before[s] for s in (spenders[0], spenders[2])),
                20,
                "the healthy spenders to keep succeeding",
            )
            seen = polls(scrape(metrics_url))
            text = wait_scrape(
                metrics_url, lambda t: polls(t) >= seen + 2, 20, "two more partial polls"
            )
            assert value(text, UP, chain_id="1") == 0
            assert last_success(text)[spenders[1]] == before[spenders[1]]
            clear_faults(base_url)
            wait_scrape(
                metrics_url,
                lambda t: (
                    value(t, UP, chain_id="1") == 1
                    and last_success(t)[spenders[1]] > before[spenders[1]]
                ),
                20,
                "recovery from the partial fault",
            )
            state = simulator_state(base_url)
            assert stop_daemon(daemon) == 0
        finally:
            stop_daemon(daemon)

    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    # The simulator's own limiter never refused the daemon: every 429 was an injected one.
    assert state["responses_by_status"].get("429", 0) == injected_429, state["responses_by_status"]
    db = tmp_path / "monitor.sqlite"
    outcomes = dict(sqlite_rows(db, "SELECT outcome, count(*) FROM polls GROUP BY outcome"))
    assert outcomes.get("partial", 0) >= 2 and outcomes.get("failed", 0) >= 2, outcomes
    events = history(config)
    # Nothing ever changed upstream: the baseline grants and balances are the only events.
    keys = [(e["chain_id"], e["wallet"], e["token"], e["spender"]) for e in events]
    assert len(keys) == len(set(keys)), "a value was recorded twice (lost and re-found)"
    assert all(e["old"] == "0" for e in events), [e for e in events if e["old"] != "0"][:5]
    assert not [e for e in events if e["change"] == "revoked"]
    first_poll = min(e["poll_id"] for e in events)
    assert {e["poll_id"] for e in events} == {first_poll}
    db_check(config)
    print(
        f"\nupstream faults: {len(PHASES) + 1} kinds, {int(polls(text))} polls, outcomes {outcomes}"
    )


def test_schema_drift_with_null_wallets_is_not_recorded_as_revokes(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "scenario.yaml", SCENARIO)
    with simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path, scenario, base_url, api={"requests_per_second": RATE, "max_attempts": 2}
        )
        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: get(metrics_url + "/healthz")[0] == 200, 30, "the listener")
            text = wait_scrape(
                metrics_url, lambda t: value(t, UP, chain_id="1") == 1, 30, "a good poll"
            )
            seen = polls(text)
            add_fault(base_url, endpoint="aggregated", body="missing_fields")
            wait_scrape(metrics_url, lambda t: polls(t) >= seen + 3, 20, "polls under the drift")
            clear_faults(base_url)
            seen = polls(scrape(metrics_url))
            wait_scrape(metrics_url, lambda t: polls(t) >= seen + 2, 20, "polls after the drift")
            assert stop_daemon(daemon) == 0
        finally:
            stop_daemon(daemon)
    events = history(config)
    db_check(config)
    revoked = [e for e in events if e["change"] == "revoked" or e["new"] == "0"]
    assert not revoked, f"{len(revoked)} zeroes recorded from a drifted answer, e.g. {revoked[0]}"
