"""``exposure-monitor run`` as a real process against the simulator, scraped over HTTP."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_helpers import (
    daemon_process,
    get,
    metric_value,
    simulator_process,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

OPS = "0xfcd6a6536fc62d5dcf3e1fd31f6bf54ea18ccba2"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"
ROUTER = "0x111111125421ca6dc452d289314280a0f8842a65"
NATIVE = "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found.append((sample.labels, sample.value))
    return found


def ops_dai_unlimited(metrics_url: str) -> bool:
    _, text = get(metrics_url + "/metrics")
    return any(
        labels["wallet"] == OPS
        and labels["token"] == DAI
        and labels["spender"] == ROUTER
        and value == 1
        for labels, value in samples(text, "exposure_monitor_allowance_unlimited")
    )


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is required (Debian package 'prometheus'; .ci/run installs it)"
    return found


def test_unlimited_approval_appears_and_vanishes_and_sigterm_exits_0(tmp_path: Path) -> None:
    with simulator_process() as base_url:
        config, metrics_url = write_config(tmp_path / "config.yaml", base_url)
        with daemon_process(config, log=tmp_path / "daemon.log") as daemon:
            wait_for(lambda: get(metrics_url + "/readyz")[0] == 200, 30, "/readyz to turn ready")
            wait_for(
                lambda: ops_dai_unlimited(metrics_url), 30, "the DAI approval (scenario poll 3)"
            )
            _, text = get(metrics_url + "/metrics")
            assert not any(
                labels["token"] == NATIVE
                for labels, _ in samples(text, "exposure_monitor_allowance")
            )
            assert not any(
                labels["token"] == NATIVE
                for labels, _ in samples(text, "exposure_monitor_allowance_unlimited")
            )
            assert samples(text, "exposure_monitor_build_info")
            checked = subprocess.run(
                [promtool(), "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
                check=False,
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
            wait_for(
                lambda: not ops_dai_unlimited(metrics_url), 30, "the DAI revoke (scenario poll 6)"
            )
            _, text = get(metrics_url + "/metrics")
            assert any(
                labels["change"] == "revoked" and value >= 1
                for labels, value in samples(text, "exposure_monitor_allowance_changes_total")
            )
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=40) == 0, (tmp_path / "daemon.log").read_text()
            assert time.monotonic() - started < 35
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log
    listed = subprocess.run(
        [sys.executable, "-m", "monitor", "findings", "--config", str(config), "--format", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    findings = [json.loads(line) for line in listed.stdout.splitlines()]
    fields = {
        "rule",
        "severity",
        "chain_id",
        "wallet",
        "spender",
        "token",
        "opened_at",
        "suppressed",
    }
    assert findings and all(fields <= set(f) for f in findings)
    assert any(f["rule"] == "exploited_spender" and f["severity"] == "critical" for f in findings)
    assert not any(
        f["token"] == DAI
        and f["wallet"] == OPS
        and f["spender"] == ROUTER
        and f["rule"] == "unlimited_approval"
        for f in findings
    )


def test_restart_restores_metrics_before_the_first_poll(tmp_path: Path) -> None:
    with simulator_process() as base_url:
        # Few retries and a short grace: the restarted daemon's poll fails fast (no upstream).
        config, metrics_url = write_config(
            tmp_path / "config.yaml",
            base_url,
            api={"max_attempts": 1},
            poll={"shutdown_grace_s": 2},
        )
        with daemon_process(config) as daemon:
            wait_for(lambda: get(metrics_url + "/readyz")[0] == 200, 30, "ready")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=40) == 0
    # Upstream is gone now: whatever /metrics shows comes from the database. The listener
    # answers before the state is loaded (exposure_monitor_state_loaded 0): wait for it.
    with daemon_process(config) as daemon:
        wait_for(
            lambda: metric_value(metrics_url, "exposure_monitor_state_loaded") == 1,
            30,
            "the stored state",
        )
        _, text = get(metrics_url + "/metrics")
        assert samples(text, "exposure_monitor_allowance_unlimited"), "state not restored"
        assert samples(text, "exposure_monitor_last_successful_poll_timestamp_seconds")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=40) == 0


def test_status_page_escapes_hostile_token_names(tmp_path: Path) -> None:
    scenario = {
        "chains": [
            {
                "id": 1,
                "tokens": [
                    {"native": True, "symbol": "ETH", "name": "Ether", "usd_price": "3500"},
                    {
                        "address": DAI,
                        "symbol": "<script>alert(1)</script>",
                        "name": "<img src=x onerror=alert(2)>",
                        "decimals": 18,
                        "usd_price": "1",
                    },
                ],
            }
        ],
        "wallets": [{"address": "0xfcd6A6536Fc62D5Dcf3E1Fd31F6BF54eA18ccBa2"}],
        "spenders": [{"chain": 1, "address": "0x111111125421cA6dc452d289314280a0f8842A65"}],
        "balances": [{"chain": 1, "wallet": "0xfcd6A6536Fc62D5Dcf3E1Fd31F6BF54eA18ccBa2", "token": DAI, "amount": "5"}],
        "allowances": [
            {"chain": 1, "wallet": "0xfcd6A6536Fc62D5Dcf3E1Fd31F6BF54eA18ccBa2", "token": DAI,
             "spender": "0x111111125421cA6dc452d289314280a0f8842A65", "amount": "max"}
        ],
    }  # fmt: skip
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    with simulator_process(path) as base_url:
        doc_path, metrics_url = write_config(tmp_path / "config.yaml", base_url)
        doc = yaml.safe_load(doc_path.read_text())
        doc["wallets"] = [{"address": "0xfcd6A6536Fc62D5Dcf3E1Fd31F6BF54eA18ccBa2"}]
        doc["chains"] = [{"id": 1, "spenders": [{"address": ROUTER}]}]
        doc_path.write_text(yaml.safe_dump(doc))
        with daemon_process(doc_path) as daemon:
            wait_for(lambda: get(metrics_url + "/readyz")[0] == 200, 30, "ready")
            wait_for(
                lambda: "unlimited_approval" in get(metrics_url + "/")[1],
                30,
                "a finding on the page",
            )
            status, page = get(metrics_url + "/")
            assert status == 200
            assert "<script>alert(1)</script>" not in page
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
            _, text = get(metrics_url + "/metrics")
            checked = subprocess.run(
                [promtool(), "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
                check=False,
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=40) == 0
