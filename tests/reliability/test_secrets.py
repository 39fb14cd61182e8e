"""Item 6: a canary API key never shows: not in logs (debug level), metrics, the status page,
error messages or the database, on success, on retries, timeouts, bad bodies and 401s."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from tests.daemon_helpers import (
    add_fault,
    cli,
    get,
    simulator_process,
    simulator_state,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.reliability.common import daemon_config, failed_total, scrape, value, write_scenario

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

SCENARIO_SOURCE = Path(__file__).resolve().parents[2] / "monitor/simulator/default_scenario.yaml"


def leaks(text: str, canaries: list[str]) -> list[str]:
    # The whole key, and any 12-character slice of it (a truncated or partly masked leak).
    found = []
    for canary in canaries:
        pieces = {canary[i : i + 12] for i in range(len(canary) - 11)}
        found += [piece for piece in pieces if piece in text]
    return found


def dump_sqlite(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert {"polls", "tokens", "change_events"} <= set(tables), tables
        return "\n".join(
            f"{table}: {row!r}"
            for table in tables
            for row in conn.execute(f'SELECT * FROM "{table}"')
        )


def pages(metrics_url: str) -> str:
    out = []
    for path in ("/metrics", "/", "/readyz", "/healthz", "/nothing-here"):
        status, body = get(metrics_url + path)
        out.append(f"{path} {status}\n{body}")
    return "\n".join(out)


def test_canary_api_key_never_appears_anywhere(tmp_path: Path) -> None:
    env_key = "canaryENV" + secrets.token_hex(12)
    cred_key = "canaryCRED" + secrets.token_hex(12)
    canaries = [env_key, cred_key]
    doc = __import__("yaml").safe_load(SCENARIO_SOURCE.read_text())
    doc["api_key"] = env_key
    scenario = write_scenario(tmp_path / "scenario.yaml", doc)
    log = tmp_path / "daemon.log"
    seen: list[str] = []
    with simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path,
            scenario,
            base_url,
            api={"requests_per_second": 200, "timeout_s": 0.3, "max_attempts": 3,
                 "backoff_initial_s": 0.01, "backoff_max_s": 0.05},
            risk={"prices": {"enabled": True, "ttl_s": 1}},
        )  # fmt: skip
        # 1. The right key from ONEINCH_API_KEY, through retries, timeouts and bad bodies.
        daemon = start_daemon(config, env={"ONEINCH_API_KEY": env_key}, log=log, log_level="debug")
        try:
            wait_for(lambda: value(scrape(metrics_url), "exposure_monitor_upstream_up", chain_id="1") == 1, 30, "a good poll")  # fmt: skip
            for fault in (
                {"status": 500, "count": 4},
                {"status": 429, "retry_after_s": 0, "count": 4},
                {"body": "truncated", "count": 2},
                {"body": "html", "count": 2},
                {"body": "not_json", "count": 2},
                {"body": "ok", "delay_s": 2, "count": 3},
                {"endpoint": "price", "status": 503, "count": 3},
            ):
                add_fault(base_url, **fault)
            wait_for(lambda: not simulator_state(base_url)["faults"], 60, "every fault served")
            wait_for(lambda: value(scrape(metrics_url), "exposure_monitor_upstream_up", chain_id="1") == 1, 30, "recovery")  # fmt: skip
            text = scrape(metrics_url)
            assert sum(failed_total(text).values()) >= 1, "no failure was provoked"
            seen.append(pages(metrics_url))
            assert stop_daemon(daemon) == 0
        finally:
            stop_daemon(daemon)
        # 2. A wrong key from the systemd credential: every request is a 401.
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / "oneinch_api_key").write_text(cred_key + "\n")
        daemon = start_daemon(
            config, env={"CREDENTIALS_DIRECTORY": str(creds)}, log=log, log_level="debug"
        )
        try:
            wait_for(
                lambda: failed_total(scrape(metrics_url)).get("rejected", 0) >= 2,
                30,
                "polls rejected with 401",
            )
            seen.append(pages(metrics_url))
            assert stop_daemon(daemon) == 0
        finally:
            stop_daemon(daemon)
        statuses = simulator_state(base_url)["responses_by_status"]
        assert statuses.get("401", 0) >= 2 and statuses.get("200", 0) >= 1, statuses
        # 3. One-shot commands on the same failures: error messages on stderr.
        for env in ({"CREDENTIALS_DIRECTORY": str(creds)}, {"ONEINCH_API_KEY": env_key + "x"}):
            once = cli("--log-level", "debug", "once", "--config", str(config), env=env)
            assert once.returncode == 3, once.stderr[-2000:]
            seen.append(once.stdout + once.stderr)
    # 4. Malformed keys are refused without being echoed.
    for bad in (env_key + " tail", env_key + "\x07"):
        checked = cli("check", "--config", str(config), env={"ONEINCH_API_KEY": bad})
        assert checked.returncode == 2, checked.stdout + checked.stderr
        seen.append(checked.stdout + checked.stderr)
    for command in (["findings", "--all"], ["history", "--since", "3650d"], ["db", "check"]):
        shown = cli(*command, "--config", str(config), "--format", "json") if command[0] != "db" else cli(*command, "--config", str(config))  # fmt: skip
        seen.append(shown.stdout + shown.stderr)
    logged = log.read_text()
    assert " DEBUG " in logged or "debug" in logged.lower(), "the log is not at debug level"
    assert "401" in logged or "Unauthorized" in logged or "rejected" in logged, logged[-2000:]
    seen += [logged, dump_sqlite(tmp_path / "monitor.sqlite"), config.read_text()]
    everything = "\n".join(seen)
    assert not leaks(everything, canaries), "the API key leaked"
    # The check itself can fail: the canary is found where it is.
    assert leaks(f"x{cred_key}y", canaries)
    print(f"\nsecrets: {len(everything)} characters of logs, pages, errors and rows scanned")
