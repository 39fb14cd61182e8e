"""The shipped Grafana dashboard and provisioning examples, checked for what Grafana's file
provisioning needs and for the habits that keep panels right on any scrape interval.

Every panel query is also run against a real Prometheus scraping the real daemon in
``tests/test_deploy_e2e.py`` (``panel_queries`` below is what it runs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from monitor.risk.model import RuleName
from tests.test_deploy_rules import documented_metrics, rules, selected_metrics

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "exposure-monitor.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
FILTER_VARIABLES = ("chain", "wallet", "spender")
CRITICAL_RULES = (RuleName.EXPLOITED_SPENDER, RuleName.EOA_SPENDER, RuleName.VALUE_AT_RISK)


@dataclass(frozen=True, slots=True, kw_only=True)
class PanelQuery:
    """One query of one panel, as Grafana would send it."""

    panel: str
    ref_id: str
    expr: str
    instant: bool


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def data_panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries (rows are layout), collapsed rows' panels included."""
    for panel in doc["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(
            panel=panel["title"],
            ref_id=target["refId"],
            expr=target["expr"],
            instant=bool(target.get("instant")) and not target.get("range"),
        )
        for panel in data_panels(dashboard())
        for target in panel["targets"]
    ]


def variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard()["templating"]["list"]}


def label_values_query(variable: dict[str, Any]) -> tuple[str, str]:
    """(series selector, label) of a ``label_values(selector, label)`` variable."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    match = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]\w*)\)", text)
    assert match, f"{variable['name']}: not a label_values(selector, label) query: {text}"
    assert variable["definition"] == text
    return match.group(1), match.group(2)


def substitute(expr: str, values: dict[str, str], rate_interval: str = "1m") -> str:
    """What Grafana sends for ``expr``: template variables and interval macros replaced."""
    for name in ("__rate_interval", "__interval", "__range"):
        expr = expr.replace(f"${name}", rate_interval).replace(f"${{{name}}}", rate_interval)
    for name, value in values.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def test_dashboard_has_a_fixed_uid_and_no_inputs() -> None:
    doc = dashboard()
    assert doc["uid"] == "exposure-monitor"
    assert doc["id"] is None
    assert "__inputs" not in doc and "__requires" not in doc
    assert "${DS_" not in DASHBOARD.read_text(), "export-for-sharing placeholders left in"
    assert doc["schemaVersion"] >= 36


def test_datasource_is_a_template_variable_used_by_every_panel_and_query() -> None:
    datasource = variables()["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    panels = list(data_panels(dashboard()))
    assert panels
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
    for name in FILTER_VARIABLES:
        assert variables()[name]["datasource"] == DATASOURCE, name


def test_chain_wallet_and_spender_variables_come_from_label_values() -> None:
    for name, label in zip(FILTER_VARIABLES, ("chain_id", "wallet", "spender"), strict=True):
        variable = variables()[name]
        assert variable["type"] == "query", name
        selector, queried = label_values_query(variable)
        assert queried == label, name
        metrics = selected_metrics(selector)
        for names in re.findall(r'__name__=~"([^"]*)"', selector):
            metrics |= set(names.split("|"))
        assert metrics and metrics <= documented_metrics(), (name, metrics)
        assert variable["includeAll"] and variable["multi"], name
        assert variable["allValue"] == ".*", name
    # Every query that can be narrowed by a variable is: the variables must do something.
    used = {name for name in FILTER_VARIABLES for q in panel_queries() if f"${name}" in q.expr}
    assert used == set(FILTER_VARIABLES)


def test_every_panel_sets_a_unit() -> None:
    for panel in data_panels(dashboard()):
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit, f"{panel['title']}: no unit"


def test_every_rate_and_increase_uses_rate_interval() -> None:
    queries = panel_queries()
    assert any("rate(" in q.expr for q in queries) and any("increase(" in q.expr for q in queries)
    for query in queries:
        ranges = re.findall(r"\[([^\]]*)\]", query.expr)
        assert all(r == "$__rate_interval" for r in ranges), (query.panel, query.expr)
        calls = len(re.findall(r"\b(?:rate|irate|increase|delta|[a-z]+_over_time)\(", query.expr))
        assert calls == len(ranges), (query.panel, query.expr)


def test_panels_query_only_documented_metrics_and_recorded_series() -> None:
    known = documented_metrics() | {rule["record"] for rule in rules() if "record" in rule}
    for query in panel_queries():
        unknown = selected_metrics(query.expr) - known
        assert not unknown, (query.panel, unknown)


def test_panels_cover_risk_approvals_balances_poll_health_and_the_api() -> None:
    by_metric: dict[str, set[str]] = {}
    for panel in data_panels(dashboard()):
        for target in panel["targets"]:
            for metric in selected_metrics(target["expr"]):
                by_metric.setdefault(metric, set()).add(panel["type"])
    required = {
        "exposure_monitor_at_risk_usd": {"stat", "timeseries"},  # in total and by spender
        "exposure_monitor_allowance_unlimited": {"table"},
        "exposure_monitor:finding:labelled": {"table"},
        "exposure_monitor_changes_total": {"timeseries"},
        "exposure_monitor_balance": {"table"},
        "exposure_monitor_last_successful_poll_timestamp_seconds": {"timeseries"},
        "exposure_monitor_polls_failed_total": {"timeseries"},
        "exposure_monitor_poll_duration_seconds_bucket": {"timeseries"},
        "exposure_monitor_api_requests_total": {"timeseries"},
        "exposure_monitor_api_request_duration_seconds_bucket": {"timeseries"},
        "exposure_monitor_open_findings": {"stat", "timeseries"},  # by severity, by rule
        # The discovery row.
        "exposure_monitor_discovery_pairs": {"timeseries"},
        "exposure_monitor_discovery_unreadable_pairs": {"timeseries"},
        "exposure_monitor_discovery_scan_lag_blocks": {"timeseries"},
        "exposure_monitor_discovery_scan_done_blocks": {"timeseries"},
        "exposure_monitor_discovery_scan_total_blocks": {"timeseries"},
        "exposure_monitor_discovery_endpoint_up": {"timeseries"},
        "exposure_monitor_rpc_requests_total": {"timeseries"},
    }
    for metric, kinds in required.items():
        assert kinds <= by_metric.get(metric, set()), metric
    by_source = [q for q in panel_queries() if re.search(r"by \([^)]*\bsource\b", q.expr)]
    assert any("exposure_monitor_allowance" in q.expr for q in by_source)
    by_rule = [q for q in panel_queries() if re.search(r"by \([^)]*\brule\b", q.expr)]
    assert any("exposure_monitor_open_findings" in q.expr for q in by_rule)
    by_spender = [q for q in panel_queries() if re.search(r"by \([^)]*\bspender\b", q.expr)]
    assert any("exposure_monitor_at_risk_usd" in q.expr for q in by_spender)


def test_panel_ids_are_unique_and_every_panel_has_a_place() -> None:
    doc = dashboard()
    ids = [panel["id"] for panel in doc["panels"]]
    ids += [p["id"] for row in doc["panels"] for p in row.get("panels", [])]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_tables_are_instant_queries_in_table_format() -> None:
    for panel in data_panels(dashboard()):
        if panel["type"] != "table":
            continue
        for target in panel["targets"]:
            assert target.get("format") == "table", panel["title"]
            assert target.get("instant") is True and not target.get("range"), panel["title"]


def test_provisioning_examples_point_at_the_dashboard_folder_and_a_prometheus() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/exposure-monitor.yml").read_text()
    )
    assert datasources["apiVersion"] == 1
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["jsonData"]["timeInterval"]  # what $__rate_interval is derived from
    providers = yaml.safe_load(
        (GRAFANA / "provisioning/dashboards/exposure-monitor.yml").read_text()
    )
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


def test_the_findings_table_names_every_rule_and_shows_the_critical_ones_in_red() -> None:
    """Each rule the daemon can raise (``eoa_spender`` included) has a value mapping on the
    open findings table's rule column; the critical ones are red."""
    (table,) = [
        p
        for p in data_panels(dashboard())
        if p["type"] == "table" and "exposure_monitor:finding:labelled" in p["targets"][0]["expr"]
    ]
    (rule_column,) = [
        o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Rule"
    ]
    (mappings,) = [p["value"] for p in rule_column["properties"] if p["id"] == "mappings"]
    options = {rule: option for m in mappings for rule, option in m["options"].items()}
    assert set(options) == {str(rule) for rule in RuleName}
    for rule in CRITICAL_RULES:
        assert options[str(rule)]["color"] == "red", rule
    assert "phishing" in options["eoa_spender"]["text"]
