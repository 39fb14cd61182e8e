"""Item 2: the database goes away under the daemon: a throwaway PostgreSQL cluster stopped and
restarted mid-run, SQLite locked by another writer. Polls fail cleanly and are counted as
``store``, nothing is half-written (``db check``), and the daemon recovers by itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.daemon_helpers import get, simulator_process, start_daemon, stop_daemon, wait_for
from tests.reliability.common import (
    daemon_config,
    db_check,
    failed_total,
    scrape,
    value,
    write_scenario,
)
from tests.reliability.pgcluster import throwaway_cluster

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

SCENARIO = {
    "generate": {
        "seed": 5,
        "chains": [1],
        "wallets": 4,
        "tokens": 3,
        "spenders": 2,
        "churn_fraction": 0.3,
    }
}
LAST = "exposure_monitor_last_successful_poll_timestamp_seconds"


def store_failures(metrics_url: str) -> float:
    return failed_total(scrape(metrics_url)).get("store", 0)


def last_success(metrics_url: str) -> float:
    text = scrape(metrics_url)
    from tests.daemon_helpers import metric_samples

    values = [v for _, v in metric_samples(text, LAST)]
    return min(values) if values else 0


def polls_recorded(metrics_url: str) -> float:
    return (
        value(
            scrape(metrics_url),
            "exposure_monitor_allowance_changes_total",
            change="balance_changed",
        )
        or 0
    )


def recovered(metrics_url: str, since: float) -> None:
    """Both: upstream polled again, and a poll was recorded (change counters move: churn)."""
    recorded = polls_recorded(metrics_url)
    wait_for(lambda: last_success(metrics_url) > since, 30, "a successful poll")
    wait_for(lambda: polls_recorded(metrics_url) > recorded, 30, "a recorded poll")


def test_postgresql_restarted_mid_run_is_survived_without_a_restart(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "scenario.yaml", SCENARIO)
    with throwaway_cluster() as cluster, simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path, scenario, base_url, database_url=cluster.url, api={"requests_per_second": 200}
        )
        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: get(metrics_url + "/healthz")[0] == 200, 30, "the listener")
            recovered(metrics_url, 0)
            for _ in range(4):
                cluster.pg_ctl(
                    "restart", "-m", "immediate", "-l", str(cluster.data.parent / "postgres.log")
                )
                assert get(metrics_url + "/healthz")[0] == 200
                recovered(metrics_url, last_success(metrics_url))
            assert stop_daemon(daemon) == 0
        finally:
            stop_daemon(daemon)
        db_check(config)


def test_postgresql_stopped_polls_fail_as_store_failures(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "scenario.yaml", SCENARIO)
    with throwaway_cluster() as cluster, simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path, scenario, base_url, database_url=cluster.url, api={"requests_per_second": 200}
        )
        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: get(metrics_url + "/healthz")[0] == 200, 30, "the listener")
            recovered(metrics_url, 0)
            failures = store_failures(metrics_url)
            cluster.pg_ctl("stop", "-m", "immediate")
            try:
                wait_for(lambda: store_failures(metrics_url) >= failures + 2, 15, "store failures")
            finally:
                cluster.pg_ctl("start", "-l", str(cluster.data.parent / "postgres.log"))
            recovered(metrics_url, last_success(metrics_url))
            assert stop_daemon(daemon) == 0
        finally:
            stop_daemon(daemon)
        db_check(config)
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_sqlite_locked_by_another_writer(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "scenario.yaml", SCENARIO)
    with simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path, scenario, base_url, api={"requests_per_second": 200}
        )
        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: get(metrics_url + "/healthz")[0] == 200, 30, "the listener")
            recovered(metrics_url, 0)
            failures = store_failures(metrics_url)
            with sqlite3.connect(
                tmp_path / "monitor.sqlite", isolation_level=None, timeout=30
            ) as other:
                other.execute("BEGIN EXCLUSIVE")
                # The busy timeout (10 s) runs out: the poll fails as a store failure.
                wait_for(lambda: store_failures(metrics_url) >= failures + 1, 40, "a store failure")
                other.execute("ROLLBACK")
            recovered(metrics_url, last_success(metrics_url))
            assert stop_daemon(daemon) == 0
        finally:
            stop_daemon(daemon)
    db_check(config)
