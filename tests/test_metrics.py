"""State metrics and the status page, from a view built by hand."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon.http import render_status
from monitor.daemon.metrics import Instruments, position_series, render_state
from monitor.daemon.view import MonitorView
from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import UINT256_MAX, Token
from monitor.domain.snapshot import Snapshot
from monitor.risk.model import Finding, RuleName, Severity, SpenderExposure

W = "0x" + "a1" * 20
S = "0x" + "c3" * 20
USDC = "0x" + "01" * 20
DAI = "0x" + "02" * 20
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)

TOKENS = {
    (1, USDC): Token(chain_id=1, address=USDC, symbol="USDC", name="USD Coin", decimals=6),
    (1, DAI): Token(
        chain_id=1, address=DAI, symbol='<script>"x"</script>', name="Dai", decimals=18
    ),
    (1, NATIVE_TOKEN): Token(
        chain_id=1, address=NATIVE_TOKEN, symbol="ETH", name="Ether", decimals=18, tags=("native",)
    ),
}


def view(**overrides: object) -> MonitorView:
    base = MonitorView(
        snapshot=Snapshot(
            allowances={(1, W, USDC, S): UINT256_MAX, (1, W, DAI, S): 1_500 * 10**18},
            balances={(1, W, USDC): 2_500_000, (1, W, NATIVE_TOKEN): 10**18},
        ),
        tokens=TOKENS,
        findings=(
            Finding(
                rule=RuleName.UNLIMITED_APPROVAL,
                severity=Severity.WARNING,
                chain_id=1,
                wallet=W,
                spender=S,
                token=USDC,
                detail="unlimited USDC",
            ),
            Finding(
                rule=RuleName.UNTRUSTED_SPENDER,
                severity=Severity.WARNING,
                chain_id=1,
                wallet=W,
                spender=S,
                token=DAI,
                detail="<b>dai</b>",
                suppressed=True,
                suppression_reason="known",
            ),
        ),
        exposures=(
            SpenderExposure(
                chain_id=1,
                wallet=W,
                spender=S,
                at_risk_usd=Decimal("2.5"),
                priced_tokens=1,
                missing_prices=(DAI,),
            ),
        ),
        last_success={(1, S): NOW},
        upstream_up={1: True},
        wallet_labels={W: "treasury"},
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def scrape(v: MonitorView, max_series: int = 1000) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    Instruments(registry, version="9.9.9")
    text = generate_latest(registry) + render_state(v, max_series).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_allowances_in_whole_tokens_and_inf_when_unlimited() -> None:
    metrics = scrape(view())
    allowances = {labels["token"]: value for labels, value in metrics["exposure_monitor_allowance"]}
    assert allowances == {USDC: math.inf, DAI: 1500.0}
    ((labels, value),) = metrics["exposure_monitor_allowance_unlimited"]
    assert (labels["token"], labels["wallet_label"], value) == (USDC, "treasury", 1.0)
    balances = {labels["token"]: value for labels, value in metrics["exposure_monitor_balance"]}
    assert balances == {USDC: 2.5, NATIVE_TOKEN: 1.0}


def test_revoked_allowance_disappears_from_the_next_scrape() -> None:
    revoked = view(snapshot=Snapshot(allowances={(1, W, DAI, S): 5}, balances={}))
    metrics = scrape(revoked)
    assert "exposure_monitor_allowance_unlimited" not in metrics
    assert [labels["token"] for labels, _ in metrics["exposure_monitor_allowance"]] == [DAI]


def test_suppressed_findings_are_not_exported() -> None:
    metrics = scrape(view())
    assert [labels["rule"] for labels, _ in metrics["exposure_monitor_finding"]] == [
        "unlimited_approval"
    ]


def test_freshness_risk_and_build_info() -> None:
    metrics = scrape(view())
    assert metrics["exposure_monitor_last_successful_poll_timestamp_seconds"] == [
        ({"chain_id": "1", "spender": S}, NOW.timestamp())
    ]
    assert metrics["exposure_monitor_upstream_up"] == [({"chain_id": "1"}, 1.0)]
    assert metrics["exposure_monitor_at_risk_usd"][0][1] == 2.5
    assert metrics["exposure_monitor_unpriced_tokens"][0][1] == 1.0
    assert metrics["exposure_monitor_build_info"] == [({"version": "9.9.9"}, 1.0)]


def test_the_series_cap_keeps_unlimited_approvals_first() -> None:
    series = position_series(view(), max_series=2)
    assert series.unlimited and series.allowance[0][1] == math.inf
    assert series.balance == ()
    assert series.dropped == 3  # DAI allowance and two balances
    assert position_series(view(), max_series=1000).dropped == 0


def test_status_page_escapes_upstream_text() -> None:
    page = render_status(view(), NOW)
    assert "<script>" not in page
    assert "&lt;script&gt;&quot;x&quot;&lt;/script&gt;" in page
    assert "&lt;b&gt;dai&lt;/b&gt;" in page
    assert "$2.50" in page
    assert "treasury" in page


def test_label_values_are_escaped_in_the_exposition() -> None:
    hostile = Token(chain_id=1, address=USDC, symbol='a"b\\c\nd', name="x", decimals=6)
    metrics = scrape(view(tokens={**TOKENS, (1, USDC): hostile}))
    symbols = {labels["symbol"] for labels, _ in metrics["exposure_monitor_allowance"]}
    assert 'a"b\\c\nd' in symbols


def test_unchanged_positions_reuse_the_rendered_text() -> None:
    first = render_state(view(), 1000)
    later = view(last_success={(1, S): NOW.replace(hour=13)})
    second = render_state(later, 1000, first)
    assert second.position_text is first.position_text
    stamps = [
        sample.value
        for family in text_string_to_metric_families(second.text.decode())
        for sample in family.samples
        if sample.name == "exposure_monitor_last_successful_poll_timestamp_seconds"
    ]
    assert stamps == [NOW.replace(hour=13).timestamp()]  # the new poll time is rendered
    changed = view(snapshot=Snapshot(allowances={(1, W, DAI, S): 5}, balances={}))
    third = render_state(changed, 1000, second)
    assert third.position_text is not second.position_text
    assert b"allowance_unlimited{" not in third.text
