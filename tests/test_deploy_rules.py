"""The shipped Prometheus rules and configs, checked by Prometheus's own tools.

``promtool`` is required: without it these tests fail rather than skip (``scripts/tools`` puts
it on PATH for ``scripts/test``). What the alerts do against a real Prometheus, Alertmanager
and daemon is in ``tests/test_deploy_e2e.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"

# PromQL functions and aggregations that Prometheus 2.42 (Debian 12) and 3.x both have, without
# feature flags. Anything else in a rule must be checked against both before it is added here.
PORTABLE_FUNCTIONS = {
    "absent",
    "count",
    "group",
    "histogram_quantile",
    "increase",
    "max",
    "min",
    "rate",
    "sum",
    "time",
    "vector",
}
# Words followed by "(" in PromQL that are not function calls.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
ALERT_SEVERITIES = {"critical", "warning", "info"}
ALERT_ANNOTATIONS = {"summary", "description", "runbook"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    assert executable is not None, (
        "promtool not found: run scripts/tools (Debian's prometheus package, unpacked into "
        ".tools/bin) and put its output on PATH, as scripts/test does"
    )
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=60
    )


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def documented_metrics() -> set[str]:
    """The metric names of README.md's "Metrics" table, with their exposition suffixes."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for name, kind in re.findall(r"^\| `(exposure_monitor_\w+)` \| (\w+) \|", table, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def selected_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (``up`` included)."""
    rest = re.sub(r'"[^"]*"', " ", expr)
    rest = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", rest)  # matchers, ranges
    rest = re.sub(r"\boffset\s+-?(?:\d+[smhdwy])+", " ", rest)  # offset modifiers
    rest = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)
    rest = re.sub(r"\b[a-zA-Z_]\w*\s*\(", " ", rest)  # function and aggregation names
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rest))
    return words - {"and", "or", "unless", "bool", "offset"}


def test_promtool_check_rules_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_promtool_unit_tests_pass() -> None:
    tested = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_seen_firing_and_silent_by_the_unit_tests() -> None:
    doc = yaml.safe_load(RULES_TEST.read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {alert["alert"] for alert in alerts()}
    assert names - fires == set(), "alerts no unit test sees firing"
    assert names - silent == set(), "alerts no unit test sees silent (or resolved)"
    assert (fires | silent) - names == set(), "unit tests of alerts that do not exist"


def test_every_alert_has_a_severity_summary_description_and_runbook() -> None:
    for alert in alerts():
        assert alert["labels"]["severity"] in ALERT_SEVERITIES, alert["alert"]
        assert set(alert["annotations"]) == ALERT_ANNOTATIONS, alert["alert"]
        assert all(text.strip() for text in alert["annotations"].values()), alert["alert"]
        assert alert["alert"].startswith("ExposureMonitor"), alert["alert"]


def test_alerts_name_the_wallet_spender_token_and_symbol_their_series_have() -> None:
    per_approval = {
        "chain_id",
        "wallet",
        "wallet_label",
        "spender",
        "spender_label",
        "token",
        "symbol",
    }
    per_wallet_and_spender = {"chain_id", "wallet", "wallet_label", "spender", "spender_label"}
    expected = {
        "ExposureMonitorUnlimitedApproval": per_approval,
        "ExposureMonitorUntrustedSpender": per_approval,
        "ExposureMonitorExploitedSpender": per_approval,
        "ExposureMonitorEoaSpender": per_approval,
        "ExposureMonitorValueAtRisk": per_wallet_and_spender,
        "ExposureMonitorDataStale": {"chain_id", "spender", "instance"},
        "ExposureMonitorFindingsNotExported": {"instance"},
        "ExposureMonitorUpstreamDown": {"chain_id", "instance"},
        "ExposureMonitorDown": {"instance"},
        "ExposureMonitorStateNotLoaded": {"instance"},
        "ExposureMonitorApprovalGranted": {"instance"},
        "ExposureMonitorAbsent": set(),
        "ExposureMonitorDiscoveryEndpointDown": {"chain_id", "instance", "endpoint"},
        "ExposureMonitorDiscoveryStuck": {"chain_id", "instance"},
        "ExposureMonitorUnreadablePairs": {"chain_id", "instance"},
    }
    assert set(expected) == {alert["alert"] for alert in alerts()}
    for alert in alerts():
        text = alert["annotations"]["summary"] + alert["annotations"]["description"]
        named = set(re.findall(r"\$labels\.(\w+)", text))
        assert named == expected[alert["alert"]], alert["alert"]


def test_rules_use_only_functions_both_prometheus_2_42_and_3_have() -> None:
    for rule in rules():
        expr = re.sub(r'"[^"]*"', '""', rule["expr"])
        called = set(re.findall(r"([a-zA-Z_]+)\s*\(", expr)) - PROMQL_KEYWORDS
        assert called <= PORTABLE_FUNCTIONS, (rule.get("alert") or rule["record"], called)


def test_rules_select_only_documented_metrics() -> None:
    known = documented_metrics() | {"up"}
    known |= {rule["record"] for rule in rules() if "record" in rule}
    assert "exposure_monitor_allowance_unlimited" in known
    for rule in rules():
        unknown = selected_metrics(rule["expr"]) - known
        assert not unknown, (rule.get("alert") or rule["record"], unknown)


def test_monitor_down_and_absent_select_the_example_scrape_job() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert jobs == ["exposure-monitor"]
    exprs = {alert["alert"]: alert["expr"] for alert in alerts()}
    assert exprs["ExposureMonitorDown"].strip() == 'up{job="exposure-monitor"} == 0'
    assert exprs["ExposureMonitorAbsent"].strip() == 'absent(up{job="exposure-monitor"})'


def test_promtool_check_config_accepts_the_example_with_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (rule_file,) = config["rule_files"]
    shutil.copy(PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / rule_file)
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_eoa_spender_is_critical_like_the_exploited_spender_and_inhibits_the_same_alerts() -> None:
    by_name = {alert["alert"]: alert for alert in alerts()}
    eoa, exploited = (
        by_name["ExposureMonitorEoaSpender"],
        by_name["ExposureMonitorExploitedSpender"],
    )
    assert eoa["labels"]["severity"] == exploited["labels"]["severity"] == "critical"
    assert eoa["expr"].strip() == 'exposure_monitor:finding:labelled{rule="eoa_spender"}'
    assert eoa["for"] == exploited["for"] == "0m"
    manager = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    (per_approval,) = [
        rule
        for rule in manager["inhibit_rules"]
        if any("ExposureMonitorUntrustedSpender" in m for m in rule["target_matchers"])
    ]
    (source,) = per_approval["source_matchers"]
    assert "ExposureMonitorExploitedSpender" in source and "ExposureMonitorEoaSpender" in source
    assert {"wallet", "token", "spender"} <= set(per_approval["equal"])


def test_alerts_on_approvals_do_not_carry_the_source_label() -> None:
    """An approval read by 1inch and later discovered too changes its ``source``: its alert
    must stay the same alert, so no alert's labels may include ``source``."""
    for alert in alerts():
        positions = {"exposure_monitor_allowance", "exposure_monitor_allowance_unlimited"}
        if selected_metrics(alert["expr"]) & positions:
            assert "without (source)" in alert["expr"], alert["alert"]
    (record,) = [rule for rule in rules() if "record" in rule]
    assert "source" not in record["expr"]
