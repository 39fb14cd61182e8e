"""State metrics and the status page, from a view built by hand."""

from __future__ import annotations

import gzip
import math
import random
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.chain.source import ChainStatus
from monitor.daemon import metrics
from monitor.daemon.http import render_status
from monitor.daemon.metrics import (
    DiscoveryCollector,
    Instruments,
    PositionSeries,
    RenderedState,
    finding_series,
    position_families,
    position_series,
    render_state,
)
from monitor.daemon.view import MonitorView
from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import UINT256_MAX, Token
from monitor.domain.snapshot import Snapshot
from monitor.oneinch.client import RequestRecord
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
        unlimited_threshold=2**96 - 1,
        poll_interval_s=300,
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


def rendered(
    v: MonitorView,
    max_series: int = 1000,
    max_findings: int = 1000,
    previous: RenderedState | None = None,
) -> RenderedState:
    return render_state(
        v, max_position_series=max_series, max_finding_series=max_findings, previous=previous
    )


def scrape(
    v: MonitorView, max_series: int = 1000, max_findings: int = 1000
) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    Instruments(registry, version="9.9.9")
    text = generate_latest(registry) + bytes(rendered(v, max_series, max_findings).text)
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


def test_the_configured_poll_interval_is_exported_from_the_view() -> None:
    assert scrape(view())["exposure_monitor_poll_interval_seconds"] == [({}, 300.0)]
    first = rendered(view())
    # A view with another interval but the same positions and findings: rendered anew.
    text = bytes(rendered(view(poll_interval_s=60), previous=first).text).decode()
    assert "\nexposure_monitor_poll_interval_seconds 60.0\n" in text
    assert "poll_interval_seconds{" not in text


def samples_of(series: PositionSeries) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    return {name: list(samples) for name, _, _, samples in position_families(series)}


def test_the_series_cap_keeps_unlimited_approvals_first() -> None:
    series = position_series(view(), max_series=2)
    assert series.unlimited == ((1, W, USDC, S),)
    samples = samples_of(series)
    assert [value for _, value in samples["allowance"]] == [math.inf]
    assert [value for _, value in samples["allowance_unlimited"]] == [1.0]
    assert samples["balance"] == []
    assert series.dropped == 3  # DAI allowance and two balances
    assert position_series(view(), max_series=1000).dropped == 0


def test_status_page_escapes_upstream_text() -> None:
    page = render_status(view(), NOW)
    assert "<script>" not in page
    assert "&lt;script&gt;&#34;x&#34;&lt;/script&gt;" in page  # Jinja2 escapes " as &#34;
    assert "&lt;b&gt;dai&lt;/b&gt;" in page
    assert "$2.50" in page
    assert "treasury" in page


def test_label_values_are_escaped_in_the_exposition() -> None:
    hostile = Token(chain_id=1, address=USDC, symbol='a"b\\c\nd', name="x", decimals=6)
    metrics = scrape(view(tokens={**TOKENS, (1, USDC): hostile}))
    symbols = {labels["symbol"] for labels, _ in metrics["exposure_monitor_allowance"]}
    assert 'a"b\\c\nd' in symbols


def test_unchanged_positions_and_findings_reuse_the_rendered_text() -> None:
    first = rendered(view())
    later = view(last_success={(1, S): NOW.replace(hour=13)})
    second = rendered(later, previous=first)
    assert second.positions is first.positions
    assert second.findings is first.findings
    stamps = [
        sample.value
        for family in text_string_to_metric_families(bytes(second.text).decode())
        for sample in family.samples
        if sample.name == "exposure_monitor_last_successful_poll_timestamp_seconds"
    ]
    assert stamps == [NOW.replace(hour=13).timestamp()]  # the new poll time is rendered
    changed = view(snapshot=Snapshot(allowances={(1, W, DAI, S): 5}, balances={}))
    third = rendered(changed, previous=second)
    assert third.positions is not second.positions
    assert third.findings is second.findings
    assert b"allowance_unlimited{" not in bytes(third.text)
    resolved = rendered(replace(changed, findings=()), previous=third)
    assert resolved.findings is not third.findings
    assert b"exposure_monitor_finding{" not in bytes(resolved.text)


def test_unchanged_exposures_reuse_their_rendered_text_and_a_change_renders_it_again() -> None:
    first = rendered(view())
    second = rendered(view(last_success={(1, S): NOW.replace(hour=13)}), previous=first)
    assert second.exposures is first.exposures
    moved = (replace(first.view.exposures[0], at_risk_usd=Decimal("7.25"), missing_prices=()),)
    third = rendered(view(exposures=moved), previous=second)
    assert third.exposures is not second.exposures
    relabelled = rendered(view(exposures=moved, wallet_labels={W: "ops"}), previous=third)
    assert relabelled.exposures is not third.exposures
    metrics = {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(bytes(relabelled.text).decode())
    }
    [(labels, value)] = metrics["exposure_monitor_at_risk_usd"]
    assert value == 7.25 and labels["wallet_label"] == "ops"
    assert metrics["exposure_monitor_unpriced_tokens"] == []


def test_a_changed_cap_renders_again() -> None:
    first = rendered(view())
    assert rendered(view(), max_series=2, previous=first).positions.dropped == 3
    assert rendered(view(), max_findings=0, previous=first).findings.dropped == 1


def finding(rule: RuleName, severity: Severity, wallet: str, chain_id: int = 1) -> Finding:
    return Finding(
        rule=rule,
        severity=severity,
        chain_id=chain_id,
        wallet=wallet,
        spender=S,
        token=None if rule is RuleName.VALUE_AT_RISK else USDC,
        detail="",
    )


MANY_FINDINGS = (
    # In the view's order (as evaluate() gives it), but info and warning before critical here
    # so that the cap's own ordering is what is tested.
    finding(RuleName.FRESH_APPROVAL, Severity.INFO, "0x" + "01" * 20),
    finding(RuleName.UNLIMITED_APPROVAL, Severity.WARNING, "0x" + "02" * 20),
    finding(RuleName.UNTRUSTED_SPENDER, Severity.WARNING, "0x" + "03" * 20),
    finding(RuleName.VALUE_AT_RISK, Severity.CRITICAL, "0x" + "04" * 20, chain_id=8453),
    finding(RuleName.UNLIMITED_APPROVAL, Severity.WARNING, "0x" + "05" * 20),
    finding(RuleName.EXPLOITED_SPENDER, Severity.CRITICAL, "0x" + "06" * 20),
    replace(
        finding(RuleName.EXPLOITED_SPENDER, Severity.CRITICAL, "0x" + "07" * 20),
        suppressed=True,
        suppression_reason="known",
    ),
)


def test_the_finding_cap_keeps_critical_then_warning_then_info_in_the_views_order() -> None:
    wallets = [f.wallet[2:4] for f in finding_series(view(findings=MANY_FINDINGS), 4).findings]
    assert wallets == ["04", "06", "02", "03"]
    everything = finding_series(view(findings=MANY_FINDINGS), 1000)
    assert [f.wallet[2:4] for f in everything.findings] == [
        "04", "06", "02", "03", "05", "01"
    ]  # fmt: skip
    assert everything.dropped == 0
    assert finding_series(view(findings=MANY_FINDINGS), 4).dropped == 2  # suppressed: not counted
    assert finding_series(view(findings=MANY_FINDINGS), 0).findings == ()


def test_open_findings_are_counted_whatever_the_cap() -> None:
    expected = {
        ("exploited_spender", "critical", "1"): 1.0,  # the suppressed one is not counted
        ("fresh_approval", "info", "1"): 1.0,
        ("unlimited_approval", "warning", "1"): 2.0,
        ("untrusted_spender", "warning", "1"): 1.0,
        ("value_at_risk", "critical", "8453"): 1.0,
    }
    for cap in (0, 1, 1000):
        metrics = scrape(view(findings=MANY_FINDINGS), max_findings=cap)
        counts = {
            (labels["rule"], labels["severity"], labels["chain_id"]): value
            for labels, value in metrics["exposure_monitor_open_findings"]
        }
        assert counts == expected
        assert len(metrics.get("exposure_monitor_finding", [])) == min(cap, 6)
    assert "exposure_monitor_open_findings" not in scrape(view(findings=()))


def test_the_state_text_is_one_gzip_stream_of_the_whole_exposition() -> None:
    state = rendered(view(findings=MANY_FINDINGS)).text
    assert len(state.members) == 4  # positions, findings, exposures, freshness
    stream = b"".join(state.gzip_chunks())
    assert len(stream) == state.gzip_size
    text = gzip.decompress(stream)  # every member, not just the first
    assert text == bytes(state)
    assert len(text) == state.text_size
    assert text.index(b"# HELP exposure_monitor_allowance ") == 0
    assert b"# HELP exposure_monitor_upstream_up " in text
    for size in (1, 7, 4096):  # inflated piece by piece, nothing is lost between pieces
        pieces = list(state.text_chunks(size))
        assert b"".join(pieces) == text
        assert max(len(piece) for piece in pieces) <= size


def test_positions_are_kept_and_written_in_key_order_whatever_the_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(5)
    wallets = [f"0x{rng.getrandbits(160):040x}" for _ in range(50)]
    allowances = {
        (1, w, token, S): UINT256_MAX if rng.random() < 0.3 else rng.randrange(1, 10**9)
        for w in wallets
        for token in (USDC, DAI)
    }
    balances = {(1, w, USDC): rng.randrange(1, 10**9) for w in wallets}
    shuffled = view(snapshot=Snapshot(allowances=allowances, balances=balances))
    whole = position_series(shuffled, max_series=120)
    monkeypatch.setattr(metrics, "SORT_SLICE", 3)
    assert position_series(shuffled, max_series=120) == whole
    unlimited = sorted(k for k, amount in allowances.items() if amount == UINT256_MAX)
    finite = sorted(k for k, amount in allowances.items() if amount != UINT256_MAX)
    assert list(whole.unlimited) == unlimited
    assert list(whole.finite) == finite[: 120 - 2 * len(unlimited)]
    written = [labels[1:4] for labels, _ in samples_of(whole)["allowance"]]
    assert written == [k[1:] for k in unlimited + finite][: 120 - len(unlimited)]
    assert whole.dropped == 2 * len(unlimited) + len(finite) + len(balances) - 120


# -- where each approval is read, and discovery -----------------------------------------------


def test_each_approval_series_says_where_it_is_read() -> None:
    both = view(
        oneinch_spenders=frozenset({(1, S)}),
        discovered=frozenset({(1, W, USDC, S)}),
    )
    metrics = scrape(both)
    sources = {
        labels["token"]: labels["source"] for labels, _ in metrics["exposure_monitor_allowance"]
    }
    assert sources == {USDC: "1inch+chain", DAI: "1inch"}
    ((labels, _),) = metrics["exposure_monitor_allowance_unlimited"]
    assert labels["source"] == "1inch+chain"
    # Key-free: only the chain reader, which discovered the USDC approval alone.
    key_free = scrape(view(discovered=frozenset({(1, W, USDC, S)})))
    assert {labels["source"] for labels, _ in key_free["exposure_monitor_allowance_unlimited"]} == {
        "chain"
    }
    # Balances are no approval: no source.
    assert all("source" not in labels for labels, _ in metrics["exposure_monitor_balance"])


def test_a_new_source_alone_renders_the_positions_again() -> None:
    first = rendered(view(oneinch_spenders=frozenset({(1, S)})))
    found = view(oneinch_spenders=frozenset({(1, S)}), discovered=frozenset({(1, W, USDC, S)}))
    second = rendered(found, previous=first)
    assert second.positions is not first.positions
    assert b'source="1inch+chain"' in bytes(second.text)
    assert rendered(found, previous=second).positions is second.positions


def test_the_series_cap_still_holds_with_the_source_label() -> None:
    discovered = view(discovered=frozenset({(1, W, USDC, S), (1, W, DAI, S)}))
    assert position_series(discovered, max_series=2).dropped == 3
    samples = samples_of(position_series(discovered, max_series=2))
    assert [labels[-1] for labels, _ in samples["allowance"]] == ["chain"]


def chain_status(**fields: object) -> ChainStatus:
    values: dict[str, object] = {"chain_id": 1, "endpoint": "https://eth.example.com"}
    values.update(fields)
    return ChainStatus(**values)  # type: ignore[arg-type]


def discovery_scrape(*statuses: ChainStatus) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(DiscoveryCollector(lambda: statuses))
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        assert family.documentation, family.name
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_discovery_gauges_per_chain_while_a_first_scan_runs_and_once_caught_up() -> None:
    scanning = chain_status(
        head_block=21_000_000,
        scanning=True,
        scan_done_blocks=250_000,
        scan_total_blocks=1_000_000,
        scan_eta_s=90.0,
        multicall=True,
    )
    caught_up = chain_status(
        chain_id=8453,
        endpoint="http://127.0.0.1:8545",
        head_block=5_000,
        scanned_to=4_988,
        scan_done_blocks=4_988,
        scan_total_blocks=4_988,
        pairs=7,
        unreadable=2,
        nft_approvals=3,
        multicall=False,
        last_error="server error (http://127.0.0.1:8545)",
    )
    m = discovery_scrape(scanning, caught_up)

    def by_chain(name: str) -> dict[str, float]:
        return {
            labels["chain_id"]: value
            for labels, value in m.get(f"exposure_monitor_discovery_{name}", [])
        }

    assert by_chain("head_block") == {"1": 21_000_000, "8453": 5_000}
    # No block scanned on chain 1 yet: no scanned block and no lag (unknown, not zero).
    assert by_chain("scanned_block") == {"8453": 4_988}
    assert by_chain("scan_lag_blocks") == {"8453": 12}
    assert by_chain("scanning") == {"1": 1, "8453": 0}
    assert by_chain("scan_done_blocks") == {"1": 250_000, "8453": 4_988}
    assert by_chain("scan_total_blocks") == {"1": 1_000_000, "8453": 4_988}
    assert by_chain("scan_eta_seconds") == {"1": 90.0}  # only while scanning
    assert by_chain("pairs") == {"1": 0, "8453": 7}
    assert by_chain("unreadable_pairs") == {"1": 0, "8453": 2}
    assert by_chain("nft_approvals") == {"1": 0, "8453": 3}
    assert by_chain("multicall") == {"1": 1, "8453": 0}
    assert by_chain("endpoint_up") == {"1": 1, "8453": 0}
    assert sorted(
        (labels["chain_id"], labels["endpoint"])
        for labels, value in m["exposure_monitor_discovery_endpoint_info"]
        if value == 1
    ) == [("1", "https://eth.example.com"), ("8453", "http://127.0.0.1:8545")]
    # Every discovery series has the chain only (and the endpoint's info its endpoint).
    for name, samples in m.items():
        for labels, _ in samples:
            assert set(labels) - {"endpoint"} == {"chain_id"}, name


def test_discovery_status_is_read_at_each_scrape_and_nothing_without_discovery() -> None:
    statuses: list[ChainStatus] = []
    registry = CollectorRegistry()
    registry.register(DiscoveryCollector(lambda: tuple(statuses)))
    assert b"exposure_monitor_discovery" not in generate_latest(registry)
    statuses.append(chain_status(pairs=3))
    assert registry.get_sample_value("exposure_monitor_discovery_pairs", {"chain_id": "1"}) == 3
    statuses[0] = chain_status(pairs=5, multicall=None)
    assert registry.get_sample_value("exposure_monitor_discovery_pairs", {"chain_id": "1"}) == 5
    assert (
        registry.get_sample_value("exposure_monitor_discovery_multicall", {"chain_id": "1"}) is None
    )


def test_rpc_requests_are_counted_by_chain_method_and_code() -> None:
    registry = CollectorRegistry()
    instruments = Instruments(registry, version="9.9.9")
    for code in ("200", "200", "429", "timeout"):
        instruments.count_rpc_request(
            1,
            RequestRecord(
                endpoint="eth_getLogs", code=code, duration_s=0.1, request_id=None, attempt=1
            ),
        )
    instruments.count_rpc_request(
        8453,
        RequestRecord(endpoint="batch", code="200", duration_s=0.1, request_id=None, attempt=1),
    )

    def count(chain_id: str, method: str, code: str) -> float | None:
        labels = {"chain_id": chain_id, "method": method, "code": code}
        return registry.get_sample_value("exposure_monitor_rpc_requests_total", labels)

    assert count("1", "eth_getLogs", "200") == 2
    assert count("1", "eth_getLogs", "429") == 1
    assert count("1", "eth_getLogs", "timeout") == 1
    assert count("8453", "batch", "200") == 1


def test_the_discovery_collector_is_registered_before_there_is_anything_to_read() -> None:
    """The daemon registers it at start, before the monitor (and its status) exists."""

    def not_yet() -> tuple[ChainStatus, ...]:
        raise AssertionError("status read at registration")

    registry = CollectorRegistry(auto_describe=True)
    registry.register(DiscoveryCollector(not_yet))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(DiscoveryCollector(not_yet))  # its names are known all the same
