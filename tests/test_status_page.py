"""The status page ``/``: its context (a pure function of the view and now) and its HTML.

The browser's view of the same page is in ``test_status_page_browser.py``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from monitor.chain.source import ChainStatus
from monitor.daemon import status_page
from monitor.daemon.http import make_app
from monitor.daemon.metrics import render_state
from monitor.daemon.status_page import render_status, status_context
from monitor.daemon.view import MonitorView
from monitor.domain.addresses import NATIVE_TOKEN, to_checksum
from monitor.domain.model import UINT256_MAX, Token
from monitor.domain.records import StoredEvent
from monitor.domain.snapshot import Change, ChangeEvent, Snapshot
from monitor.risk.model import Finding, RuleName, Severity, SpenderExposure

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
TREASURY = "0x" + "a1" * 20
COLD = "0x" + "b2" * 20
ROUTER = "0x" + "c3" * 20
DRAINER = "0x" + "d4" * 20
USDC = "0x" + "01" * 20
EVIL = "0x" + "02" * 20
WETH = "0x" + "03" * 20
HOSTILE_SYMBOL = "<script>document.title='pwned'</script>"
HOSTILE_NAME = '<img src=x onerror="document.title=2">'

TOKENS = {
    (1, USDC): Token(chain_id=1, address=USDC, symbol="USDC", name="USD Coin", decimals=6),
    (1, EVIL): Token(chain_id=1, address=EVIL, symbol=HOSTILE_SYMBOL, name=HOSTILE_NAME, decimals=18),
    (42161, WETH): Token(
        chain_id=42161, address=WETH, symbol="WE\u202eTH\x1b[31m", name="Wrapped", decimals=18
    ),
    (1, NATIVE_TOKEN): Token(
        chain_id=1, address=NATIVE_TOKEN, symbol="ETH", name="Ether", decimals=18, tags=("native",)
    ),
}  # fmt: skip


def finding(rule: RuleName, severity: Severity, **fields: object) -> Finding:
    values: dict[str, object] = {
        "chain_id": 1,
        "wallet": TREASURY,
        "spender": ROUTER,
        "token": USDC,
        "detail": f"{rule} fired",
    }
    values.update(fields)
    return Finding(rule=rule, severity=severity, **values)  # type: ignore[arg-type]


def event(minutes_ago: float, change: Change, old: int, new: int, **fields: object) -> StoredEvent:
    values: dict[str, object] = {
        "chain_id": 1,
        "wallet": TREASURY,
        "token": USDC,
        "spender": ROUTER,
    }
    values.update(fields)
    return StoredEvent(
        poll_id=1,
        observed_at=NOW - timedelta(minutes=minutes_ago),
        event=ChangeEvent(change=change, old=old, new=new, **values),  # type: ignore[arg-type]
    )


def view(**overrides: object) -> MonitorView:
    """Two wallets on Ethereum and Arbitrum; the router holds an unlimited USDC approval and
    an approval of a token with a hostile symbol; the drainer's approval was revoked (its
    exposure is left over, at $0.00)."""
    base = MonitorView(
        unlimited_threshold=2**128,
        poll_interval_s=300,
        snapshot=Snapshot(
            allowances={
                (1, TREASURY, USDC, ROUTER): UINT256_MAX,
                (1, TREASURY, EVIL, ROUTER): 10**18,
                (42161, COLD, WETH, ROUTER): 5 * 10**17,
            },
            balances={(1, TREASURY, USDC): 2_500_000_000, (1, TREASURY, NATIVE_TOKEN): 10**18},
        ),
        tokens=TOKENS,
        findings=(
            finding(RuleName.VALUE_AT_RISK, Severity.CRITICAL, token=None),
            finding(RuleName.UNLIMITED_APPROVAL, Severity.WARNING),
            finding(
                RuleName.UNTRUSTED_SPENDER,
                Severity.WARNING,
                chain_id=42161,
                wallet=COLD,
                token=WETH,
                suppressed=True,
                suppression_reason="audited vault, ticket SEC-12",
            ),
        ),
        exposures=(
            SpenderExposure(
                chain_id=1,
                wallet=TREASURY,
                spender=ROUTER,
                at_risk_usd=Decimal("2500"),
                priced_tokens=1,
                missing_prices=(EVIL,),
            ),
            SpenderExposure(
                chain_id=1, wallet=TREASURY, spender=DRAINER, at_risk_usd=Decimal(0), priced_tokens=1
            ),
        ),
        last_success={(1, ROUTER): NOW - timedelta(seconds=40), (42161, ROUTER): NOW},
        upstream_up={1: True, 42161: False},
        last_poll_at=NOW - timedelta(seconds=40),
        last_poll_outcome="partial",
        wallet_labels={TREASURY: "treasury"},
        spender_labels={(1, ROUTER): "1inch router"},
        recent_changes=(
            event(5, Change.BECAME_UNLIMITED, 5_000_000, UINT256_MAX),
            event(30, Change.REVOKED, 10**6, 0, spender=DRAINER),
            event(90, Change.BALANCE_CHANGED, 0, 1_234_500_000, spender=None),
            event(25 * 60, Change.GRANTED, 0, 1),  # older than a day: not listed
        ),
    )  # fmt: skip
    return replace(base, **overrides)  # type: ignore[arg-type]


_BLOCKS = frozenset(("br", "div", "h1", "h2", "h3", "li", "p", "section", "td", "th", "tr"))


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip -= 1
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(page: str) -> str:
    """The page's text as a person reads it: tags dropped, entities decoded, spaces collapsed."""
    parser = _Text()
    parser.feed(page)
    parser.close()
    return re.sub(r"\s+", " ", "".join(parser.parts)).strip()


def test_chain_names_stand_beside_their_ids() -> None:
    text = visible_text(render_status(view(), NOW))
    assert "Ethereum (1)" in text
    assert "Arbitrum (42161)" in text
    unknown = view(upstream_up={999: True}, last_success={})
    assert [row.chain.name for row in status_context(unknown, NOW).chains] == ["chain 999"]


def test_labelled_addresses_read_label_then_short_address_with_full_on_hover_and_link() -> None:
    page = render_status(view(), NOW)
    text = visible_text(page)
    treasury, router = to_checksum(TREASURY), to_checksum(ROUTER)
    assert f"treasury ({treasury[:6]}…{treasury[-4:]})" in text
    assert f"1inch router ({router[:6]}…{router[-4:]})" in text
    link = f'href="https://etherscan.io/address/{treasury}" title="{treasury}"'
    assert link in page
    # The same wallet on Arbitrum links to Arbitrum's explorer.
    cold = to_checksum(COLD)
    assert f'href="https://arbiscan.io/address/{cold}" title="{cold}"' in page
    # An unlabelled address is its short form alone.
    drainer = to_checksum(DRAINER)
    assert f"{drainer[:6]}…{drainer[-4:]}" in text


def test_a_finding_to_revoke_names_the_token_contract_the_spender_and_the_call() -> None:
    context = status_context(view(), NOW)
    unlimited = next(f for f in context.open_findings.shown if f.rule == "unlimited_approval")
    (call,) = unlimited.revoke
    assert call.call == f"approve({to_checksum(ROUTER)}, 0)"
    assert call.token.contract is not None
    assert call.token.contract.address == to_checksum(USDC)
    assert call.token.contract.url == f"https://etherscan.io/address/{to_checksum(USDC)}"
    text = visible_text(render_status(view(), NOW))
    usdc = to_checksum(USDC)
    call = f"send approve({to_checksum(ROUTER)}, 0) to the USDC {usdc[:6]}…{usdc[-4:]} contract"
    assert call in text


def test_value_at_risk_lists_one_revoke_call_per_token_the_spender_may_take() -> None:
    context = status_context(view(), NOW)
    at_risk = next(f for f in context.open_findings.shown if f.rule == "value_at_risk")
    contracts = [c.token.contract.address for c in at_risk.revoke if c.token.contract]
    assert contracts == [to_checksum(USDC), to_checksum(EVIL)]  # not the native coin


def test_a_suppressed_finding_shows_its_reason_and_is_not_counted_open() -> None:
    context = status_context(view(), NOW)
    assert context.open_findings.total == 2
    assert [f.rule for f in context.open_findings.shown] == ["value_at_risk", "unlimited_approval"]
    (suppressed,) = context.suppressed_findings.shown
    assert suppressed.suppression_reason == "audited vault, ticket SEC-12"
    page = render_status(view(), NOW)
    text = visible_text(page)
    assert "Open findings (2)" in text
    assert "Suppressed findings (1)" in text
    assert "audited vault, ticket SEC-12" in text
    assert "<title>exposure-monitor: 2 open findings</title>" in page


def test_changes_of_the_last_24_hours_newest_first_in_whole_tokens() -> None:
    rows = status_context(view(), NOW).changes.shown
    assert [(r.change, r.old, r.new) for r in rows] == [
        ("became unlimited", "5", "unlimited"),
        ("revoked", "1", "0"),
        ("balance changed", "0", "1,234.5"),  # a balance is never "unlimited"
    ]
    assert rows[0].age == "5 min ago"
    assert rows[2].spender is None
    text = visible_text(render_status(view(), NOW))
    assert "Changes in the last 24 hours (3)" in text
    quiet = visible_text(render_status(view(recent_changes=()), NOW))
    assert "No changes in the last 24 hours." in quiet


def test_the_configured_unlimited_threshold_decides_what_reads_unlimited() -> None:
    changed = (event(1, Change.INCREASED, 10, 5000),)
    low = status_context(view(unlimited_threshold=1000, recent_changes=changed), NOW)
    assert (low.changes.shown[0].old, low.changes.shown[0].new) == ("0.00001", "unlimited")
    high = status_context(view(recent_changes=changed), NOW)
    assert high.changes.shown[0].new == "0.005"


def test_no_leftover_zero_row_for_a_revoked_spender() -> None:
    context = status_context(view(), NOW)
    assert [(e.spender.address, e.at_risk_usd) for e in context.exposures.shown] == [
        (to_checksum(ROUTER), "$2,500.00")
    ]
    assert "$0.00" not in render_status(view(), NOW)
    revoked = view(snapshot=Snapshot(), findings=(), exposures=view().exposures[1:])
    text = visible_text(render_status(revoked, NOW))
    assert "Value at risk $0.00" in text
    assert text.count("$0.00") == 1  # the total, no row
    assert "Nothing approved: no spender can move anything." in text


def test_refresh_follows_the_poll_interval_with_a_floor() -> None:
    def refresh(interval_s: float) -> str:
        found = re.search(
            r'http-equiv="refresh" content="(\d+)"',
            render_status(view(poll_interval_s=interval_s), NOW),
        )
        assert found
        return found.group(1)

    assert refresh(300) == "300"
    assert refresh(60.5) == "61"
    assert refresh(1) == str(status_page.MIN_REFRESH_S)


def test_after_a_restart_the_page_shows_the_restored_last_poll() -> None:
    # What restore() publishes: the stored successes, and (item 14) the last poll.
    restored = view(last_poll_at=NOW - timedelta(minutes=3), last_poll_outcome="ok")
    card = visible_text(render_status(restored, NOW))
    assert "Last poll 3 min ago 2026-11-24T11:57:00Z · ok" in card
    # Even with only the successes restored, the page agrees with /readyz.
    successes_only = view(last_poll_at=None, last_poll_outcome=None)
    text = visible_text(render_status(successes_only, NOW))
    assert "no poll" not in text.lower()
    assert "Last poll 0 s ago last successful poll 2026-11-24T12:00:00Z" in text
    never = visible_text(render_status(MonitorView(unlimited_threshold=1, poll_interval_s=1), NOW))
    assert "Last poll none yet no poll recorded yet" in never


def test_a_partial_last_poll_also_says_when_the_last_success_was() -> None:
    text = visible_text(render_status(view(), NOW))
    assert "partial" in text
    assert "last successful: 2026-11-24T12:00:00Z (0 s ago)" in text


def test_hostile_token_text_is_inert() -> None:
    page = render_status(view(), NOW)
    assert "<script>" not in page
    assert "<img" not in page
    assert "\u202e" not in page
    assert "\x1b" not in page
    text = visible_text(page)
    assert HOSTILE_SYMBOL in text  # shown as the literal text it is
    assert "WE\ufffdTH\ufffd[31m" in text
    assert 'title="&lt;img src=x onerror=&#34;document.title=2&#34;&gt;"' in page


def test_the_template_is_compiled_once_with_autoescape() -> None:
    template = status_page._template()
    assert template is status_page._template()
    assert template.environment.autoescape is True


def test_watched_wallets_and_spenders_are_all_listed() -> None:
    quiet = view(
        snapshot=Snapshot(),
        findings=(),
        exposures=(),
        watched_wallets=(TREASURY, COLD),
        watched_spenders=((1, ROUTER), (42161, ROUTER)),
    )
    context = status_context(quiet, NOW)
    assert [w.wallet.address for w in context.wallets] == [to_checksum(TREASURY), to_checksum(COLD)]
    assert [name for _, url in context.wallets[1].explorers for name in [url[:20]]] == [
        "https://etherscan.io",
        "https://arbiscan.io/",
    ]
    assert [(c.name, [s.label for s in spenders]) for c, spenders in context.spenders] == [
        ("Ethereum", ["1inch router"]),
        ("Arbitrum", [None]),
    ]


async def test_the_page_is_served_as_html_that_may_run_no_script() -> None:
    v = view()
    app = make_app(
        registry=CollectorRegistry(),
        view=lambda: v,
        state_text=lambda: render_state(v, max_position_series=10, max_finding_series=10).text,
        clock=lambda: NOW,
        ready_max_age_s=900,
    )
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/")
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Open findings (2)" in visible_text(await response.text())
        ready = await client.get("/readyz")
        assert (ready.status, await ready.text()) == (200, "ready: last successful poll 0s ago\n")


# -- discovered approvals and discovery ---------------------------------------------------------


def discovered_view() -> MonitorView:
    """1inch reads the router on Ethereum; the chain reader discovered the USDC approval (so
    it is read by both) and the WETH one on Arbitrum (chain only), with their log's time."""
    return view(
        oneinch_spenders=frozenset({(1, ROUTER)}),
        discovered=frozenset({(1, TREASURY, USDC, ROUTER), (42161, COLD, WETH, ROUTER)}),
        approved_at={
            (1, TREASURY, USDC, ROUTER): NOW - timedelta(hours=3),
            (42161, COLD, WETH, ROUTER): NOW - timedelta(days=400),
        },
    )


def test_each_approval_says_where_it_is_read_and_when_a_discovered_one_was_approved() -> None:
    context = status_context(discovered_view(), NOW)
    rows = {(r.chain.id, r.token.symbol[:2]): r for r in context.approvals.shown}
    assert context.approvals.total == 3
    usdc, evil, weth = rows[(1, "US")], rows[(1, "<s")], rows[(42161, "WE")]
    assert (usdc.source, usdc.allowance) == ("1inch+chain", "unlimited")
    assert (usdc.approved_at, usdc.approved_age) == ("2026-11-24T09:00:00Z", "3 h ago")
    assert (evil.source, evil.approved_at, evil.allowance) == ("1inch", None, "1")
    assert (weth.source, weth.approved_age, weth.allowance) == ("chain", "400 d ago", "0.5")
    text = visible_text(render_status(discovered_view(), NOW))
    assert "Approvals (3)" in text
    assert "unlimited 1inch+chain 3 h ago 2026-11-24T09:00:00Z" in text
    assert "0.5 chain 400 d ago" in text


def test_a_revoked_approval_and_the_native_coin_are_not_approvals() -> None:
    revoked = view(
        snapshot=Snapshot(
            allowances={(1, TREASURY, USDC, ROUTER): 0, (1, TREASURY, NATIVE_TOKEN, ROUTER): 5}
        )
    )
    assert status_context(revoked, NOW).approvals.total == 0
    assert "No approvals." in visible_text(render_status(revoked, NOW))


def scan_status(**fields: object) -> ChainStatus:
    values: dict[str, object] = {"chain_id": 1, "endpoint": "https://eth-mainnet.example.com"}
    values.update(fields)
    return ChainStatus(**values)  # type: ignore[arg-type]


def test_discovery_shows_a_running_scan_with_its_progress_and_eta_per_chain() -> None:
    statuses = (
        scan_status(
            chain_id=8453,
            endpoint="http://127.0.0.1:8545",
            head_block=5_000,
            scanned_to=4_988,
            pairs=7,
            unreadable=2,
            nft_approvals=1,
            multicall=False,
        ),
        scan_status(
            head_block=21_000_000,
            scanning=True,
            scan_done_blocks=250_000,
            scan_total_blocks=1_000_000,
            scan_eta_s=5400.0,
            multicall=True,
        ),
    )
    context = status_context(view(), NOW, statuses)
    ethereum, base = context.discovery  # by chain id
    assert (ethereum.state, ethereum.scan, ethereum.eta) == (
        "scanning",
        "250,000 of 1,000,000 blocks (25%)",
        "90 min",
    )
    assert (ethereum.scanned_to, ethereum.lag_blocks, ethereum.multicall) == ("-", "-", "yes")
    assert (base.state, base.scan, base.lag_blocks) == ("caught up", None, "12")
    assert (base.pairs, base.unreadable, base.nft_approvals) == (7, 2, 1)
    text = visible_text(render_status(view(), NOW, statuses))
    assert (
        "Ethereum (1) https://eth-mainnet.example.com scanning 21,000,000 - - "
        "250,000 of 1,000,000 blocks (25%) ETA 90 min 0 0 0 yes"
    ) in text
    assert "Base (8453) http://127.0.0.1:8545 caught up 5,000 4,988 12 - 7 2 1 no" in text


def test_no_discovery_section_without_discovery() -> None:
    assert status_context(view(), NOW).discovery == ()
    assert "Discovery" not in visible_text(render_status(view(), NOW))


def test_a_failing_chain_shows_its_error_without_any_part_of_a_url_past_the_host() -> None:
    leaky = scan_status(
        endpoint="https://eth-mainnet.example.com/v2/hunter2",
        head_block=100,
        scanned_to=88,
        last_error=(
            "connection failed to https://user:hunter2@eth-mainnet.example.com:8545/v2/hunter2"
            "?key=hunter2: ClientOSError"
        ),
    )
    page = render_status(view(), NOW, (leaky,))
    (row,) = status_context(view(), NOW, (leaky,)).discovery
    assert row.state == "failing"
    assert row.endpoint == "https://eth-mainnet.example.com"
    assert row.error == "connection failed to https://eth-mainnet.example.com:8545: ClientOSError"
    assert "hunter2" not in page
    assert "https://eth-mainnet.example.com:8545: ClientOSError" in visible_text(page)


async def test_the_served_page_shows_the_live_discovery_status() -> None:
    v = view()
    statuses = [scan_status(scanning=True, scan_done_blocks=1, scan_total_blocks=4)]
    app = make_app(
        registry=CollectorRegistry(),
        view=lambda: v,
        state_text=lambda: render_state(v, max_position_series=10, max_finding_series=10).text,
        clock=lambda: NOW,
        ready_max_age_s=900,
        discovery=lambda: tuple(statuses),
    )
    async with TestClient(TestServer(app)) as client:
        assert "1 of 4 blocks (25%) ETA estimating" in visible_text(
            await (await client.get("/")).text()
        )
        statuses[0] = scan_status(head_block=10, scanned_to=8)
        text = visible_text(await (await client.get("/")).text())
        assert "caught up 10 8 2" in text
