"""The risk rules: each one firing and staying silent, exact value at risk, suppression."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import FrozenInstanceError, dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config.exploits import bundled_exploits
from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import UINT256_MAX, Token
from monitor.domain.snapshot import AllowanceKey, BalanceKey, Change, ChangeEvent, Snapshot
from monitor.risk import rules
from monitor.risk.exploits import ExploitList
from monitor.risk.exposure import spender_exposures, token_value_usd
from monitor.risk.model import (
    DEFAULT_UNLIMITED_THRESHOLD,
    Finding,
    KnownSpender,
    RiskReport,
    RuleName,
    RuleSettings,
    Severity,
    SpenderExposure,
    Suppression,
)
from monitor.risk.rules import evaluate

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """Shaped like ``monitor.store.snapshots.StoredEvent`` (the rules take any such value)."""

    poll_id: int
    observed_at: datetime
    event: ChangeEvent


W1 = "0x5014ef5ed72014e90b82285ea7888b4a091409ec"
W2 = "0xfcd6a6536fc62d5dcf3e1fd31f6bf54ea18ccba2"
ROUTER = "0x111111125421ca6dc452d289314280a0f8842a65"  # configured, trusted
VENDOR = "0x161b1dfb96298624a40c7d1e1948cd75045e5aba"  # configured, not trusted
STRANGER = "0x" + "5e" * 20  # not in the config
FURUCOMBO = "0x17e8ca1b4798b97602895f63206afcd1fc90ca5f"  # in the bundled exploit list
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
UNI = "0x1f9840a85d5af5bf1d1762f925bdaddc4201f984"
MYSTERY = "0x" + "c0" * 20  # decimals unknown
WRAPPED_NATIVE_TAGGED = "0x" + "ee" * 19 + "ef"  # tagged native by 1inch, not 0xeeee…


def token(address: str, symbol: str, decimals: int | None, *tags: str) -> Token:
    return Token(chain_id=1, address=address, symbol=symbol, name=symbol, decimals=decimals,
                 tags=tags)  # fmt: skip


TOKENS = {
    (1, t.address): t
    for t in (
        token(USDC, "USDC", 6),
        token(WETH, "WETH", 18),
        token(UNI, "UNI", 18),
        token(MYSTERY, "MYST", None),
        token(NATIVE_TOKEN, "ETH", 18, "native"),
        token(WRAPPED_NATIVE_TAGGED, "ETH2", 18, "native"),
    )
}
SPENDERS = {
    (1, ROUTER): KnownSpender(label="1inch Router v6", trusted=True),
    (1, VENDOR): KnownSpender(label="vendor", trusted=False),
}
PRICES = {(1, USDC): Decimal("1.00"), (1, WETH): Decimal("3500"), (1, UNI): Decimal("9.50")}
EXPLOITS = bundled_exploits()


def snap(
    allowances: Mapping[tuple[str, str, str], int],
    balances: Mapping[tuple[str, str], int] | None = None,
    chain_id: int = 1,
) -> Snapshot:
    """A snapshot from {(wallet, token, spender): allowance} and {(wallet, token): balance}."""
    akeys: dict[AllowanceKey, int] = {(chain_id, w, t, s): a for (w, t, s), a in allowances.items()}
    bkeys: dict[BalanceKey, int] = {(chain_id, w, t): b for (w, t), b in (balances or {}).items()}
    return Snapshot(allowances=akeys, balances=bkeys)


def run(
    snapshot: Snapshot,
    *,
    prices: Mapping[tuple[int, str], Decimal] = PRICES,
    events: Sequence[StoredEvent] = (),
    settings: RuleSettings | None = None,
    now: datetime = NOW,
    exploits: ExploitList = EXPLOITS,
    tokens: Mapping[tuple[int, str], Token] = TOKENS,
) -> RiskReport:
    return evaluate(
        snapshot,
        tokens=tokens,
        spenders=SPENDERS,
        exploits=exploits,
        prices_usd=prices,
        recent_events=events,
        settings=settings or RuleSettings(),
        now=now,
    )


def fired(report: RiskReport, rule: RuleName) -> list[Finding]:
    return [f for f in report.findings if f.rule == rule]


def granted(
    wallet: str,
    tok: str,
    spender: str,
    *,
    at: datetime,
    new: int,
    old: int = 0,
    change: Change = Change.GRANTED,
) -> StoredEvent:
    event = ChangeEvent(chain_id=1, wallet=wallet, token=tok, spender=spender, change=change,
                        old=old, new=new)  # fmt: skip
    return StoredEvent(poll_id=1, observed_at=at, event=event)


# -- unlimited_approval -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "allowance",
    [UINT256_MAX, 2**160 - 1, 2**96 - 1],
    ids=["uint256-max", "uint160-max-permit2", "uint96-max-uni"],
)
def test_every_infinite_convention_is_unlimited_at_the_default_threshold(allowance: int) -> None:
    report = run(snap({(W1, UNI, ROUTER): allowance}))
    [finding] = fired(report, RuleName.UNLIMITED_APPROVAL)
    assert finding.severity == Severity.WARNING
    assert finding.key == ("unlimited_approval", 1, W1, ROUTER, UNI)
    assert "UNI" in finding.detail
    assert "1inch Router v6" in finding.detail


@pytest.mark.parametrize("allowance", [2**96 - 2, 10**27, 1])
def test_a_large_finite_approval_is_not_unlimited(allowance: int) -> None:
    assert allowance < DEFAULT_UNLIMITED_THRESHOLD
    assert fired(run(snap({(W1, UNI, ROUTER): allowance})), RuleName.UNLIMITED_APPROVAL) == []


def test_unlimited_threshold_comes_from_the_settings() -> None:
    settings = RuleSettings(unlimited_threshold=1000)
    report = run(snap({(W1, UNI, ROUTER): 1000, (W2, UNI, ROUTER): 999}), settings=settings)
    assert [f.wallet for f in fired(report, RuleName.UNLIMITED_APPROVAL)] == [W1]


def test_the_native_coin_never_counts_even_if_it_reaches_a_snapshot() -> None:
    report = run(
        snap(
            {(W1, NATIVE_TOKEN, STRANGER): UINT256_MAX, (W1, WRAPPED_NATIVE_TAGGED, STRANGER): 5},
            {(W1, NATIVE_TOKEN): 10**21, (W1, WRAPPED_NATIVE_TAGGED): 10**21},
        ),
        prices={(1, NATIVE_TOKEN): Decimal(3500), (1, WRAPPED_NATIVE_TAGGED): Decimal(3500)},
        events=[granted(W1, NATIVE_TOKEN, STRANGER, at=NOW, new=UINT256_MAX)],
    )
    assert report == RiskReport()


def test_a_finite_approval_to_a_trusted_spender_raises_nothing() -> None:
    report = run(snap({(W1, USDC, ROUTER): 1_000 * 10**6}, {(W1, USDC): 500 * 10**6}))
    assert report.findings == ()
    assert report.exposures == (
        SpenderExposure(chain_id=1, wallet=W1, spender=ROUTER, at_risk_usd=Decimal(500),
                        priced_tokens=1, missing_prices=()),
    )  # fmt: skip


def test_a_zero_allowance_raises_nothing() -> None:
    assert run(snap({(W1, USDC, STRANGER): 0}, {(W1, USDC): 10**6})) == RiskReport()


# -- untrusted_spender --------------------------------------------------------------------------


def test_details_that_name_no_number_of_their_own_are_one_shared_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An approval of 2^256-1 reads the same in every wallet: its findings' details are one
    string object, not one per approval (however often the sharing table starts over)."""
    allowances = {
        (W1, USDC, STRANGER): UINT256_MAX,
        (W2, USDC, STRANGER): UINT256_MAX,
        (W1, WETH, STRANGER): UINT256_MAX,
        (W2, WETH, STRANGER): 5 * 10**18,
    }
    for table_size in (rules.SHARED_DETAILS, 1):
        monkeypatch.setattr(rules, "SHARED_DETAILS", table_size)
        report = run(snap(allowances))
        untrusted = {
            (f.wallet, f.token): f.detail for f in fired(report, RuleName.UNTRUSTED_SPENDER)
        }
        unlimited = {
            (f.wallet, f.token): f.detail for f in fired(report, RuleName.UNLIMITED_APPROVAL)
        }
        assert untrusted[(W1, USDC)] == untrusted[(W2, USDC)] == untrusted[(W1, WETH)]
        assert "2^256-1 approved to" in untrusted[(W1, USDC)]
        assert "5 WETH approved to" in untrusted[(W2, WETH)]
        if table_size > 1:
            assert untrusted[(W1, USDC)] is untrusted[(W2, USDC)] is untrusted[(W1, WETH)]
            assert unlimited[(W1, USDC)] is unlimited[(W2, USDC)]
        assert unlimited[(W1, USDC)] == unlimited[(W2, USDC)] != unlimited[(W1, WETH)]


def test_approval_to_a_spender_not_marked_trusted_is_a_warning() -> None:
    report = run(snap({(W1, USDC, VENDOR): 5_000 * 10**6}))
    [finding] = fired(report, RuleName.UNTRUSTED_SPENDER)
    assert finding.severity == Severity.WARNING
    assert (finding.wallet, finding.spender, finding.token) == (W1, VENDOR, USDC)
    assert "5,000 USDC" in finding.detail
    assert "not marked trusted" in finding.detail


def test_a_spender_missing_from_the_config_is_untrusted() -> None:
    [finding] = fired(run(snap({(W1, USDC, STRANGER): 1})), RuleName.UNTRUSTED_SPENDER)
    assert "not in the config" in finding.detail
    assert "0x5E5e" in finding.detail or "0x5e5E" in finding.detail  # shown checksummed


def test_a_trusted_spender_is_not_untrusted() -> None:
    assert fired(run(snap({(W1, USDC, ROUTER): 1})), RuleName.UNTRUSTED_SPENDER) == []


# -- exploited_spender --------------------------------------------------------------------------


def test_approval_to_an_exploited_spender_is_critical_and_names_the_exploit() -> None:
    report = run(snap({(W2, USDC, FURUCOMBO): UINT256_MAX}, {(W2, USDC): 3_000 * 10**6}))
    [finding] = fired(report, RuleName.EXPLOITED_SPENDER)
    assert finding.severity == Severity.CRITICAL
    assert finding.token == USDC
    assert "Furucombo Hack" in finding.detail
    assert "2021-02-27" in finding.detail
    assert report.findings[0] == finding  # critical first


def test_trusting_an_exploited_spender_does_not_hide_the_exploit() -> None:
    trusted = {**SPENDERS, (1, FURUCOMBO): KnownSpender(trusted=True)}
    report = evaluate(
        snap({(W2, USDC, FURUCOMBO): 1}),
        tokens=TOKENS,
        spenders=trusted,
        exploits=EXPLOITS,
        prices_usd=PRICES,
        recent_events=(),
        settings=RuleSettings(),
        now=NOW,
    )
    [finding] = fired(report, RuleName.EXPLOITED_SPENDER)
    assert "marked trusted in the config" in finding.detail
    assert fired(report, RuleName.UNTRUSTED_SPENDER) == []


def test_the_exploit_list_is_per_chain() -> None:
    report = run(snap({(W2, USDC, FURUCOMBO): 1}, chain_id=8453))
    assert fired(report, RuleName.EXPLOITED_SPENDER) == []


def test_an_empty_exploit_list_finds_no_exploit() -> None:
    report = run(snap({(W2, USDC, FURUCOMBO): 1}), exploits=ExploitList())
    assert fired(report, RuleName.EXPLOITED_SPENDER) == []


# -- value_at_risk ------------------------------------------------------------------------------


def test_unlimited_approval_on_a_zero_balance_is_unlimited_but_risks_nothing() -> None:
    report = run(snap({(W2, WETH, ROUTER): UINT256_MAX}))
    assert [f.rule for f in report.findings] == [RuleName.UNLIMITED_APPROVAL]
    [exposure] = report.exposures
    assert exposure.at_risk_usd == 0
    assert (exposure.priced_tokens, exposure.missing_prices) == (1, ())


def test_value_at_risk_is_min_of_balance_and_allowance_exactly_with_six_decimals() -> None:
    report = run(
        snap({(W1, USDC, ROUTER): 1_000_250_000}, {(W1, USDC): 1_500_500_000}),
        prices={(1, USDC): Decimal("1.01")},
    )
    [exposure] = report.exposures
    assert exposure.at_risk_usd == Decimal("1010.2525")  # 1,000.25 USDC x 1.01
    assert str(exposure.at_risk_usd) == "1010.2525"


def test_value_at_risk_sums_every_token_of_one_spender() -> None:
    report = run(
        snap(
            {(W1, USDC, ROUTER): UINT256_MAX, (W1, WETH, ROUTER): 2**160 - 1},
            {(W1, USDC): 1_000_250_000, (W1, WETH): 1_500_000_000_000_000_000},
        ),
        prices={(1, USDC): Decimal("1.01"), (1, WETH): Decimal("3500.5")},
    )
    [exposure] = report.exposures
    assert exposure.at_risk_usd == Decimal("6261.0025")  # 1010.2525 + 1.5 x 3500.5
    assert exposure.priced_tokens == 2


def test_value_at_risk_does_not_round_78_digit_amounts() -> None:
    report = run(
        snap({(W1, USDC, ROUTER): UINT256_MAX}, {(W1, USDC): UINT256_MAX}),
        prices={(1, USDC): Decimal("1.000001")},
    )
    expected = Fraction(UINT256_MAX, 10**6) * Fraction("1.000001")
    assert Fraction(report.exposures[0].at_risk_usd) == expected
    [finding] = fired(report, RuleName.VALUE_AT_RISK)
    assert finding.token is None


def test_value_at_risk_is_per_wallet_and_spender() -> None:
    report = run(
        snap(
            {(W1, USDC, ROUTER): 10**6, (W1, USDC, VENDOR): 2 * 10**6, (W2, USDC, ROUTER): 10**6},
            {(W1, USDC): 10**12, (W2, USDC): 10**12},
        )
    )
    assert [(e.wallet, e.spender, e.at_risk_usd) for e in report.exposures] == [
        (W1, ROUTER, Decimal(1)),
        (W1, VENDOR, Decimal(2)),
        (W2, ROUTER, Decimal(1)),
    ]


@pytest.mark.parametrize(
    ("threshold", "fires"), [(Decimal("1010.2525"), False), (Decimal("1010.2524"), True)]
)
def test_value_at_risk_fires_only_above_the_threshold(threshold: Decimal, fires: bool) -> None:
    report = run(
        snap({(W1, USDC, ROUTER): 1_000_250_000}, {(W1, USDC): 1_500_500_000}),
        prices={(1, USDC): Decimal("1.01")},
        settings=RuleSettings(value_at_risk_usd=threshold),
    )
    findings = fired(report, RuleName.VALUE_AT_RISK)
    assert bool(findings) is fires
    if fires:
        assert findings[0].severity == Severity.CRITICAL
        assert "1,010.25 USD" in findings[0].detail


def test_missing_prices_are_reported_not_counted_as_zero() -> None:
    report = run(
        snap(
            {(W1, USDC, ROUTER): UINT256_MAX, (W1, UNI, ROUTER): UINT256_MAX,
             (W1, MYSTERY, ROUTER): UINT256_MAX, (W1, STRANGER, ROUTER): UINT256_MAX},
            {(W1, USDC): 20_000 * 10**6, (W1, UNI): 10**18, (W1, MYSTERY): 5, (W1, STRANGER): 7},
        ),
        prices={(1, USDC): Decimal(1), (1, MYSTERY): Decimal(2), (1, STRANGER): Decimal(3)},
    )  # fmt: skip
    [exposure] = report.exposures
    # UNI has no price; MYSTERY no decimals; STRANGER (a token) no metadata at all.
    assert exposure.missing_prices == (UNI, STRANGER, MYSTERY)  # in address order
    assert exposure.at_risk_usd == 20_000
    assert exposure.priced_tokens == 1
    assert not exposure.complete
    [finding] = fired(report, RuleName.VALUE_AT_RISK)
    assert "3 unpriced token(s) not counted" in finding.detail
    assert "UNI" in finding.detail


def test_an_unpriced_token_with_nothing_at_risk_is_not_missing() -> None:
    report = run(snap({(W1, UNI, ROUTER): UINT256_MAX}), prices={})
    [exposure] = report.exposures
    assert exposure.at_risk_usd == 0
    assert (exposure.priced_tokens, exposure.missing_prices) == (1, ())


def test_a_negative_price_is_treated_as_unknown() -> None:
    report = run(
        snap({(W1, USDC, ROUTER): 10**6}, {(W1, USDC): 10**6}), prices={(1, USDC): Decimal(-1)}
    )
    assert report.exposures[0].missing_prices == (USDC,)


def test_token_value_is_exact_decimal() -> None:
    value = token_value_usd(123_456_789, 6, Decimal("0.333333333333333333333333333333"))
    assert isinstance(value, Decimal)
    assert Fraction(value) == Fraction(123_456_789, 10**6) * Fraction(
        "0.333333333333333333333333333333"
    )
    assert str(token_value_usd(5 * 10**21, 18, Decimal("2000"))) == "10000000"


amounts = st.integers(min_value=0, max_value=UINT256_MAX)
prices = st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False)


@given(
    positions=st.lists(
        st.tuples(amounts, amounts, st.integers(min_value=0, max_value=36), prices),
        min_size=1,
        max_size=6,
    )
)
def test_value_at_risk_is_exact_and_never_exceeds_balances_times_price(
    positions: list[tuple[int, int, int, Decimal]],
) -> None:
    allowances: dict[AllowanceKey, int] = {}
    balances: dict[BalanceKey, int] = {}
    tokens: dict[tuple[int, str], Token] = {}
    price_map: dict[tuple[int, str], Decimal] = {}
    exact = Fraction(0)
    ceiling = Fraction(0)
    for i, (balance, allowance, decimals, price) in enumerate(positions):
        address = f"0x{i + 1:040x}"
        tokens[(1, address)] = token(address, f"T{i}", decimals)
        price_map[(1, address)] = price
        if allowance:
            allowances[(1, W1, address, ROUTER)] = allowance
            exact += Fraction(min(balance, allowance), 10**decimals) * Fraction(price)
            ceiling += Fraction(balance, 10**decimals) * Fraction(price)
        if balance:
            balances[(1, W1, address)] = balance
    exposures = spender_exposures(
        Snapshot(allowances=allowances, balances=balances), tokens=tokens, prices_usd=price_map
    )
    if not allowances:
        assert exposures == ()
        return
    [exposure] = exposures
    assert isinstance(exposure.at_risk_usd, Decimal)
    assert Fraction(exposure.at_risk_usd) == exact
    assert exposure.at_risk_usd <= ceiling
    assert exposure.priced_tokens == len(allowances)


# -- fresh_approval -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "fires"),
    [
        (timedelta(0), True),
        (timedelta(hours=1), True),
        (timedelta(hours=24), True),
        (timedelta(hours=24, microseconds=1), False),
        (timedelta(days=3), False),
    ],
)
def test_fresh_approval_window_edges(age: timedelta, fires: bool) -> None:
    report = run(
        snap({(W1, USDC, ROUTER): 10**6}),
        events=[granted(W1, USDC, ROUTER, at=NOW - age, new=10**6)],
    )
    findings = fired(report, RuleName.FRESH_APPROVAL)
    assert bool(findings) is fires
    if fires:
        assert findings[0].severity == Severity.INFO
        assert findings[0].key == ("fresh_approval", 1, W1, ROUTER, USDC)


def test_fresh_approval_window_comes_from_the_settings() -> None:
    event = granted(W1, USDC, ROUTER, at=NOW - timedelta(hours=2), new=10**6)
    snapshot = snap({(W1, USDC, ROUTER): 10**6})
    short = RuleSettings(fresh_approval_hours=1.5)
    assert fired(run(snapshot, events=[event], settings=short), RuleName.FRESH_APPROVAL) == []
    assert fired(run(snapshot, events=[event]), RuleName.FRESH_APPROVAL) != []


@pytest.mark.parametrize(
    ("change", "fires"),
    [
        (Change.GRANTED, True),
        (Change.INCREASED, True),
        (Change.BECAME_UNLIMITED, True),
        (Change.DECREASED, False),
        (Change.NO_LONGER_UNLIMITED, False),
    ],
)
def test_only_grants_and_increases_are_fresh(change: Change, fires: bool) -> None:
    event = granted(W1, USDC, ROUTER, at=NOW, old=5, new=10**6, change=change)
    report = run(snap({(W1, USDC, ROUTER): 10**6}), events=[event])
    assert bool(fired(report, RuleName.FRESH_APPROVAL)) is fires


def test_a_fresh_approval_already_revoked_is_not_reported() -> None:
    event = granted(W1, USDC, ROUTER, at=NOW - timedelta(hours=1), new=UINT256_MAX)
    assert fired(run(snap({}), events=[event]), RuleName.FRESH_APPROVAL) == []


def test_balance_changes_are_not_approvals() -> None:
    event = StoredEvent(
        poll_id=1,
        observed_at=NOW,
        event=ChangeEvent(chain_id=1, wallet=W1, token=USDC, spender=None,
                          change=Change.BALANCE_CHANGED, old=0, new=10**6),
    )  # fmt: skip
    report = run(snap({(W1, USDC, ROUTER): 10**6}, {(W1, USDC): 10**6}), events=[event])
    assert fired(report, RuleName.FRESH_APPROVAL) == []


def test_one_fresh_finding_per_approval_describing_the_latest_change() -> None:
    events = [
        granted(W1, USDC, ROUTER, at=NOW - timedelta(hours=3), new=10**6),
        granted(W1, USDC, ROUTER, at=NOW - timedelta(hours=1), old=10**6, new=UINT256_MAX,
                change=Change.BECAME_UNLIMITED),
    ]  # fmt: skip
    report = run(snap({(W1, USDC, ROUTER): UINT256_MAX}), events=list(reversed(events)))
    [finding] = fired(report, RuleName.FRESH_APPROVAL)
    assert "became unlimited at 2025-06-01T11:00:00Z" in finding.detail


# -- suppression --------------------------------------------------------------------------------

FURUCOMBO_REPORT_SNAPSHOT = snap({(W2, USDC, FURUCOMBO): UINT256_MAX}, {(W2, USDC): 10**12})


def suppressed_by(*entries: Suppression, now: datetime = NOW) -> RiskReport:
    return run(FURUCOMBO_REPORT_SNAPSHOT, settings=RuleSettings(suppressions=entries), now=now)


def test_without_suppressions_every_rule_is_active() -> None:
    report = suppressed_by()
    assert {f.rule for f in report.active} == {
        RuleName.EXPLOITED_SPENDER,
        RuleName.UNLIMITED_APPROVAL,
        RuleName.UNTRUSTED_SPENDER,
        RuleName.VALUE_AT_RISK,
    }


def test_a_matching_suppression_marks_the_finding_but_keeps_it() -> None:
    report = suppressed_by(
        Suppression(spender=FURUCOMBO, rule="untrusted_spender", reason="known, revoking Monday")
    )
    [finding] = fired(report, RuleName.UNTRUSTED_SPENDER)
    assert finding.suppressed
    assert finding.suppression_reason == "known, revoking Monday"
    assert finding not in report.active
    others = [f for f in report.findings if f.rule != RuleName.UNTRUSTED_SPENDER]
    assert others
    assert not any(f.suppressed for f in others)


def test_a_suppression_with_every_field_must_match_every_field() -> None:
    entry = Suppression(wallet=W2, spender=FURUCOMBO, token=USDC, rule="unlimited_approval",
                        chain_id=1, reason="r")  # fmt: skip
    assert fired(suppressed_by(entry), RuleName.UNLIMITED_APPROVAL)[0].suppressed
    for mismatch in (
        replace(entry, wallet=W1),
        replace(entry, spender=ROUTER),
        replace(entry, token=WETH),
        replace(entry, rule="fresh_approval"),
        replace(entry, chain_id=8453),
    ):
        assert not fired(suppressed_by(mismatch), RuleName.UNLIMITED_APPROVAL)[0].suppressed


def test_a_suppression_naming_a_token_does_not_match_value_at_risk() -> None:
    report = suppressed_by(Suppression(spender=FURUCOMBO, token=USDC, reason="r"))
    assert not fired(report, RuleName.VALUE_AT_RISK)[0].suppressed
    assert fired(report, RuleName.EXPLOITED_SPENDER)[0].suppressed


@pytest.mark.parametrize(
    ("until", "suppressed"),
    [
        (None, True),
        (NOW + timedelta(seconds=1), True),
        (NOW, False),
        (NOW - timedelta(days=1), False),
    ],
)
def test_an_expired_suppression_does_not_suppress(until: datetime | None, suppressed: bool) -> None:
    report = suppressed_by(Suppression(wallet=W2, until=until, reason="r"))
    assert all(f.suppressed is suppressed for f in report.findings)
    assert report.findings


def test_the_first_matching_suppression_gives_the_reason() -> None:
    report = suppressed_by(
        Suppression(wallet=W2, until=NOW - timedelta(days=1), reason="expired"),
        Suppression(wallet=W2, reason="current"),
        Suppression(spender=FURUCOMBO, reason="later"),
    )
    assert {f.suppression_reason for f in report.findings} == {"current"}


# -- the report ---------------------------------------------------------------------------------


def test_findings_are_ordered_most_severe_first_whatever_the_input_order() -> None:
    allowances = {
        (W1, USDC, ROUTER): UINT256_MAX,
        (W1, WETH, VENDOR): 5,
        (W2, USDC, FURUCOMBO): 7,
        (W2, UNI, STRANGER): UINT256_MAX,
    }
    balances = {(W1, USDC): 10**12, (W2, USDC): 10**6}
    events = [granted(w, t, s, at=NOW, new=a) for (w, t, s), a in allowances.items()]
    expected = run(snap(allowances, balances), events=events)
    items = list(allowances.items())
    for seed in range(5):
        random.Random(seed).shuffle(items)
        shuffled = run(snap(dict(items), balances), events=list(reversed(events)))
        assert shuffled == expected
    ranks = [f.severity.rank for f in expected.findings]
    assert ranks == sorted(ranks, reverse=True)
    assert len({f.key for f in expected.findings}) == len(expected.findings)


def test_findings_and_exposures_are_frozen() -> None:
    finding = fired(run(snap({(W1, USDC, STRANGER): 1})), RuleName.UNTRUSTED_SPENDER)[0]
    with pytest.raises(FrozenInstanceError):
        finding.suppressed = True  # type: ignore[misc]


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run(snap({}), now=NOW.replace(tzinfo=None))


# -- eoa_spender and approvals dated by their log -------------------------------------------


def test_an_approval_to_an_address_without_code_is_a_critical_eoa_finding() -> None:
    snapshot = snap({(W1, USDC, STRANGER): 5 * 10**6, (W1, USDC, ROUTER): 7 * 10**6})
    report = evaluate(
        snapshot,
        tokens=TOKENS,
        spenders=SPENDERS,
        exploits=EXPLOITS,
        prices_usd=PRICES,
        recent_events=(),
        settings=RuleSettings(),
        now=NOW,
        codeless_spenders=frozenset({(1, STRANGER)}),
    )
    eoa = fired(report, RuleName.EOA_SPENDER)
    assert [(f.wallet, f.token, f.spender, f.severity) for f in eoa] == [
        (W1, USDC, STRANGER, Severity.CRITICAL)
    ]
    assert "no contract code" in eoa[0].detail
    assert "5 USDC" in eoa[0].detail or "5 " in eoa[0].detail
    # Without the fact, no finding: the rule never guesses.
    assert fired(run(snapshot), RuleName.EOA_SPENDER) == []


def test_a_discovered_approval_is_fresh_by_its_log_block_time_not_by_first_sight() -> None:
    snapshot = snap({(W1, USDC, STRANGER): 5 * 10**6, (W1, WETH, STRANGER): 10**18})
    approved_at = {
        (1, W1, USDC, STRANGER): NOW - timedelta(hours=2),  # fresh
        (1, W1, WETH, STRANGER): NOW - timedelta(days=400),  # years-old, seen first today
    }
    # A first sight today of both (what a new install sees) must not date the old one.
    events = [
        granted(W1, USDC, STRANGER, at=NOW - timedelta(minutes=5), new=5 * 10**6),
        granted(W1, WETH, STRANGER, at=NOW - timedelta(minutes=5), new=10**18),
    ]
    report = evaluate(
        snapshot,
        tokens=TOKENS,
        spenders=SPENDERS,
        exploits=EXPLOITS,
        prices_usd=PRICES,
        recent_events=events,
        settings=RuleSettings(),
        now=NOW,
        approved_at=approved_at,
    )
    fresh = fired(report, RuleName.FRESH_APPROVAL)
    assert [(f.token, f.spender) for f in fresh] == [(USDC, STRANGER)]
    assert (NOW - timedelta(hours=2)).isoformat()[:16] in fresh[0].detail.replace(" ", "T")


def test_a_discovered_approval_used_or_lowered_is_not_fresh_again() -> None:
    """A log comes with every approve(), a decrease too, and OpenZeppelin 4 tokens emit one
    on each transferFrom: a new log alone, with no grant or increase, is not a fresh approval."""
    snapshot = snap({(W1, USDC, STRANGER): 3 * 10**6})
    key = (1, W1, USDC, STRANGER)
    decreased = granted(
        W1, USDC, STRANGER, at=NOW - timedelta(minutes=5), new=3 * 10**6, old=5 * 10**6,
        change=Change.DECREASED,
    )  # fmt: skip
    report = evaluate(
        snapshot,
        tokens=TOKENS,
        spenders=SPENDERS,
        exploits=EXPLOITS,
        prices_usd=PRICES,
        recent_events=[decreased],
        settings=RuleSettings(),
        now=NOW,
        approved_at={key: NOW - timedelta(minutes=6)},
    )
    assert fired(report, RuleName.FRESH_APPROVAL) == []
