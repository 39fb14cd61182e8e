"""The incremental evaluator gives exactly the report of the full one, poll after poll."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import UINT256_MAX, Token
from monitor.domain.snapshot import AllowanceKey, BalanceKey, Snapshot, diff_snapshots
from monitor.risk import incremental
from monitor.risk.incremental import RiskEvaluator
from monitor.risk.model import RuleSettings, Suppression
from monitor.risk.rules import evaluate
from tests.test_risk_rules import (
    EXPLOITS,
    FURUCOMBO,
    MYSTERY,
    NOW,
    PRICES,
    ROUTER,
    SPENDERS,
    STRANGER,
    TOKENS,
    UNI,
    USDC,
    VENDOR,
    W1,
    W2,
    WETH,
    StoredEvent,
)

WALLETS = (W1, W2)
TOKEN_ADDRESSES = (USDC, WETH, UNI, MYSTERY, NATIVE_TOKEN)
SPENDER_ADDRESSES = (ROUTER, VENDOR, STRANGER, FURUCOMBO)
AMOUNTS = st.sampled_from([0, 0, 1, 5 * 10**6, 10**18, 2**96 - 1, UINT256_MAX])

allowance_maps = st.dictionaries(
    st.tuples(
        st.sampled_from([1, 10]),
        st.sampled_from(WALLETS),
        st.sampled_from(TOKEN_ADDRESSES),
        st.sampled_from(SPENDER_ADDRESSES),
    ),
    AMOUNTS,
    max_size=25,
)
balance_maps = st.dictionaries(
    st.tuples(st.sampled_from([1, 10]), st.sampled_from(WALLETS), st.sampled_from(TOKEN_ADDRESSES)),
    AMOUNTS,
    max_size=12,
)
price_maps = st.dictionaries(
    st.tuples(st.just(1), st.sampled_from(TOKEN_ADDRESSES)),
    st.sampled_from([Decimal("1.00"), Decimal("1"), Decimal("3500"), Decimal("0.000001")]),
    max_size=4,
)
steps = st.tuples(
    st.none() | allowance_maps,  # None: the allowances of the previous poll
    st.none() | balance_maps,
    st.one_of(st.just(PRICES), price_maps),
    st.booleans(),  # rename a token (what is known of tokens changed)
    st.integers(min_value=0, max_value=50),  # minutes since the previous poll
)

SUPPRESSIONS = (
    Suppression(reason="vendor is audited", spender=VENDOR, until=NOW + timedelta(minutes=40)),
    Suppression(reason="W2 is a test wallet", wallet=W2, rule="untrusted_spender"),
    Suppression(reason="accepted", rule="value_at_risk", until=NOW + timedelta(minutes=90)),
)


def _snapshot(allowances: dict[AllowanceKey, int], balances: dict[BalanceKey, int]) -> Snapshot:
    # Snapshots hold non-zero amounts only.
    return Snapshot(
        allowances={k: v for k, v in allowances.items() if v},
        balances={k: v for k, v in balances.items() if v},
    )


@settings(max_examples=150, deadline=None)
@given(
    history=st.lists(steps, min_size=1, max_size=8),
    suppress=st.booleans(),
    shared_keys=st.sampled_from([1, 3, incremental.SHARED_KEYS]),
)
def test_each_report_equals_the_full_evaluation(
    history: list[
        tuple[dict[AllowanceKey, int] | None, dict[BalanceKey, int] | None, dict, bool, int]
    ],
    suppress: bool,
    shared_keys: int,
) -> None:
    # A table of shared keys that starts over every few keys changes nothing in the reports.
    with mock.patch.object(incremental, "SHARED_KEYS", shared_keys):
        _each_report_equals_the_full_evaluation(history, suppress)


def _each_report_equals_the_full_evaluation(
    history: list[
        tuple[dict[AllowanceKey, int] | None, dict[BalanceKey, int] | None, dict, bool, int]
    ],
    suppress: bool,
) -> None:
    risk = RuleSettings(
        value_at_risk_usd=Decimal(100),
        suppressions=SUPPRESSIONS if suppress else (),
        unlimited_threshold=2**96 - 1,
    )
    evaluator = RiskEvaluator(spenders=SPENDERS, exploits=EXPLOITS, settings=risk)
    previous = Snapshot()
    events: list[StoredEvent] = []
    now = NOW
    tokens: dict[tuple[int, str], Token] = {
        **TOKENS,
        **{(10, k[1]): replace(t, chain_id=10) for k, t in TOKENS.items()},
    }
    for poll_id, (allowances, balances, prices, rename, minutes) in enumerate(history, start=1):
        now += timedelta(minutes=minutes)
        current = _snapshot(
            dict(previous.allowances) if allowances is None else allowances,
            dict(previous.balances) if balances is None else balances,
        )
        events += [
            StoredEvent(poll_id=poll_id, observed_at=now, event=e)
            for e in diff_snapshots(previous, current, threshold=2**96 - 1)
        ]
        if rename:
            key = (1, UNI)
            tokens[key] = replace(tokens[key], symbol=tokens[key].symbol + "x")
        expected = evaluate(
            current,
            tokens=tokens,
            spenders=SPENDERS,
            exploits=EXPLOITS,
            prices_usd=prices,
            recent_events=events,
            settings=risk,
            now=now,
        )
        got = evaluator.evaluate(
            current, tokens=dict(tokens), prices_usd=prices, recent_events=events, now=now
        )
        assert got.findings == expected.findings
        assert got.exposures == expected.exposures
        previous = current


def test_the_evaluators_findings_index_holds_one_tuple_per_distinct_pair() -> None:
    """300,000 approvals name a few hundred (spender, token) pairs: the findings index keeps
    one tuple object for each, not one per approval."""
    evaluator = RiskEvaluator(spenders=SPENDERS, exploits=EXPLOITS, settings=RuleSettings())
    allowances = {
        (1, wallet, token, spender): 10**18
        for wallet in WALLETS
        for token in (USDC, WETH, UNI)
        for spender in (VENDOR, STRANGER)
    }
    evaluator.evaluate(
        _snapshot(allowances, {}), tokens=TOKENS, prices_usd=PRICES, recent_events=(), now=NOW
    )
    held = [pair for found in evaluator._buckets.values() for pair in found]
    assert len(held) == 12  # 2 wallets x 3 tokens x 2 untrusted spenders
    assert len({id(pair) for pair in held}) == 6


def test_a_price_change_revalues_exactly_the_groups_holding_the_token() -> None:
    """No index of groups by token: a repriced token is looked for in every group."""
    evaluator = RiskEvaluator(
        spenders=SPENDERS, exploits=EXPLOITS, settings=RuleSettings(value_at_risk_usd=Decimal(0))
    )
    allowances = {(1, W1, USDC, VENDOR): 10**12, (1, W2, WETH, VENDOR): 10**18}
    balances = {(1, W1, USDC): 10**12, (1, W2, WETH): 10**18}
    snapshot = _snapshot(allowances, balances)
    first = evaluator.evaluate(
        snapshot, tokens=TOKENS, prices_usd=PRICES, recent_events=(), now=NOW
    )
    repriced = {**PRICES, (1, WETH): Decimal("4000")}
    second = evaluator.evaluate(
        snapshot, tokens=TOKENS, prices_usd=repriced, recent_events=(), now=NOW
    )
    before = {(e.wallet, e.spender): e for e in first.exposures}
    after = {(e.wallet, e.spender): e for e in second.exposures}
    assert after[(W1, VENDOR)] is before[(W1, VENDOR)]  # USDC's price did not move
    assert after[(W2, VENDOR)].at_risk_usd == Decimal("4000")
    assert before[(W2, VENDOR)].at_risk_usd == Decimal("3500")


def test_an_unchanged_poll_reuses_the_previous_findings() -> None:
    """The point of the evaluator: nothing changed, nothing is re-derived."""
    allowances = {(1, W1, USDC, VENDOR): UINT256_MAX, (1, W1, WETH, FURUCOMBO): 5 * 10**18}
    snapshot = Snapshot(allowances=allowances, balances={(1, W1, WETH): 10**19})
    evaluator = RiskEvaluator(spenders=SPENDERS, exploits=EXPLOITS, settings=RuleSettings())
    first = evaluator.evaluate(
        snapshot, tokens=TOKENS, prices_usd=PRICES, recent_events=(), now=NOW
    )
    again = evaluator.evaluate(
        Snapshot(allowances=dict(allowances), balances=dict(snapshot.balances)),
        tokens=dict(TOKENS),
        prices_usd=dict(PRICES),
        recent_events=(),
        now=NOW + timedelta(minutes=5),
    )
    assert [f.rule for f in first.findings] == [
        "exploited_spender",
        "value_at_risk",
        "unlimited_approval",
        "untrusted_spender",
        "untrusted_spender",
    ]
    assert again.findings is first.findings  # the very tuple: nothing to compare downstream
    assert all(a is b for a, b in zip(first.exposures, again.exposures, strict=True))


def test_a_suppression_running_out_is_noticed_without_any_change() -> None:
    until = NOW + timedelta(minutes=10)
    risk = RuleSettings(suppressions=(Suppression(reason="audited", spender=VENDOR, until=until),))
    snapshot = Snapshot(allowances={(1, W1, USDC, VENDOR): 5})
    evaluator = RiskEvaluator(spenders=SPENDERS, exploits=EXPLOITS, settings=risk)
    before = evaluator.evaluate(
        snapshot, tokens=TOKENS, prices_usd=PRICES, recent_events=(), now=NOW
    )
    after = evaluator.evaluate(
        snapshot, tokens=TOKENS, prices_usd=PRICES, recent_events=(), now=until
    )
    assert [f.suppressed for f in before.findings] == [True]
    assert [f.suppressed for f in after.findings] == [False]


def test_now_must_be_timezone_aware() -> None:
    evaluator = RiskEvaluator(spenders=SPENDERS, exploits=EXPLOITS, settings=RuleSettings())
    with pytest.raises(ValueError, match="timezone"):
        evaluator.evaluate(
            Snapshot(),
            tokens=TOKENS,
            prices_usd=PRICES,
            recent_events=(),
            now=NOW.replace(tzinfo=None),
        )


def test_spender_code_facts_and_log_dates_give_the_full_evaluation() -> None:
    evaluator = RiskEvaluator(spenders=SPENDERS, exploits=EXPLOITS, settings=RuleSettings())
    allowances: dict[AllowanceKey, int] = {
        (1, W1, USDC, STRANGER): 5 * 10**6,
        (1, W2, USDC, STRANGER): UINT256_MAX,
    }
    current = _snapshot(allowances, {(1, W1, USDC): 10**6})
    now = NOW
    for codeless, dated in (
        (frozenset(), {}),
        (frozenset({(1, STRANGER)}), {(1, W1, USDC, STRANGER): now - timedelta(hours=1)}),
        (frozenset({(1, STRANGER)}), {}),
        (frozenset(), {(1, W2, USDC, STRANGER): now - timedelta(hours=30)}),
    ):
        now += timedelta(minutes=5)
        expected = evaluate(
            current,
            tokens=TOKENS,
            spenders=SPENDERS,
            exploits=EXPLOITS,
            prices_usd={},
            recent_events=(),
            settings=RuleSettings(),
            now=now,
            codeless_spenders=codeless,
            approved_at=dated,
        )
        got = evaluator.evaluate(
            current,
            tokens=dict(TOKENS),
            prices_usd={},
            recent_events=(),
            now=now,
            codeless_spenders=codeless,
            approved_at=dated,
        )
        assert got.findings == expected.findings
        assert any(f.rule == "eoa_spender" for f in got.findings) == bool(codeless)
