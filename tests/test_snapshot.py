"""The pure snapshot core: observe, diff and apply."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config.model import DEFAULT_UNLIMITED_THRESHOLD as T
from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import (
    UINT256_MAX,
    Coverage,
    Position,
    Token,
)
from monitor.domain.snapshot import (
    EMPTY_SNAPSHOT,
    Change,
    Snapshot,
    apply_events,
    classify,
    diff_snapshots,
    observe,
    observe_changes,
)

W1, W2 = "0x" + "a1" * 20, "0x" + "b2" * 20
S1, S2 = "0x" + "c3" * 20, "0x" + "d4" * 20
T1, T2, T3 = "0x" + "01" * 20, "0x" + "02" * 20, "0x" + "03" * 20
LIMIT = 2**96 - 1


def position(
    wallet: str, token: str, spender: str, balance: int, allowance: int, chain_id: int = 1
) -> Position:
    return Position(
        chain_id=chain_id,
        wallet=wallet,
        spender=spender,
        token=Token(chain_id=chain_id, address=token, symbol="T", name="T", decimals=18),
        balance=balance,
        allowance=allowance,
    )


def covering(
    spender: str, *wallets: str, chain_id: int = 1, **kwargs: frozenset[str] | None
) -> Coverage:
    return Coverage(chain_id=chain_id, spender=spender, wallets=frozenset(wallets), **kwargs)  # type: ignore[arg-type]


BEFORE = Snapshot(
    allowances={(1, W1, T1, S1): 100, (1, W2, T1, S1): UINT256_MAX, (1, W1, T2, S2): 5},
    balances={(1, W1, T1): 7, (1, W2, T1): 9},
)


def test_a_failed_batch_is_not_a_revoke() -> None:
    # Only W1's batch for S1 succeeded and it saw nothing at all; W2's batch failed.
    after = observe(BEFORE, [], [covering(S1, W1)])
    assert (1, W1, T1, S1) not in after.allowances  # observed as zero: a real revoke
    assert after.allowances[(1, W2, T1, S1)] == UINT256_MAX  # not observed: unchanged
    assert after.allowances[(1, W1, T2, S2)] == 5  # spender S2 not polled: unchanged
    assert (1, W1, T1) not in after.balances
    assert after.balances[(1, W2, T1)] == 9


def test_a_token_dropped_by_filter_empty_is_recorded_as_zero() -> None:
    after = observe(BEFORE, [position(W2, T1, S1, 9, UINT256_MAX)], [covering(S1, W1, W2)])
    events = diff_snapshots(BEFORE, after, threshold=T)
    assert [(e.wallet, e.token, e.spender, e.change, e.old, e.new) for e in events] == [
        (W1, T1, S1, Change.REVOKED, 100, 0),
        (W1, T1, None, Change.BALANCE_CHANGED, 7, 0),
    ]


def test_custom_token_coverage_does_not_zero_listed_tokens() -> None:
    custom = covering(S1, W1, tokens=frozenset({T3}))
    after = observe(BEFORE, [], [custom])
    assert after == BEFORE
    listed = covering(S1, W1, except_tokens=frozenset({T1}))
    assert observe(BEFORE, [], [listed]) == BEFORE  # T1 is custom here, so not covered


def test_native_placeholder_allowance_never_enters_a_snapshot() -> None:
    native = Position(
        chain_id=1,
        wallet=W1,
        spender=S1,
        token=Token(
            chain_id=1,
            address=NATIVE_TOKEN,
            symbol="ETH",
            name="Ether",
            decimals=18,
            tags=("native",),
        ),
        balance=3,
        allowance=UINT256_MAX,
    )
    after = observe(EMPTY_SNAPSHOT, [native], [covering(S1, W1)])
    assert after.allowances == {}
    assert after.balances == {(1, W1, NATIVE_TOKEN): 3}


def test_balance_observed_through_any_spender() -> None:
    after = observe(BEFORE, [position(W2, T1, S2, 11, 0)], [covering(S2, W2)])
    assert after.balances[(1, W2, T1)] == 11
    assert after.allowances[(1, W2, T1, S1)] == UINT256_MAX


@pytest.mark.parametrize(
    ("old", "new", "change"),
    [
        (0, 5, Change.GRANTED),
        (0, UINT256_MAX, Change.GRANTED),
        (5, 0, Change.REVOKED),
        (UINT256_MAX, 0, Change.REVOKED),
        (5, 6, Change.INCREASED),
        (6, 5, Change.DECREASED),
        (5, LIMIT, Change.BECAME_UNLIMITED),
        (UINT256_MAX, 10, Change.NO_LONGER_UNLIMITED),
        (
            UINT256_MAX,
            UINT256_MAX - 1,
            Change.DECREASED,
        ),  # still unlimited: an infinite allowance spent from
        (LIMIT, UINT256_MAX, Change.INCREASED),
    ],
)
def test_classify(old: int, new: int, change: Change) -> None:
    assert classify(old, new, T) is change


def test_classify_refuses_no_change() -> None:
    with pytest.raises(ValueError, match="unchanged"):
        classify(3, 3, T)


amounts = st.one_of(
    st.just(0), st.integers(1, 10**30), st.sampled_from([UINT256_MAX, 2**160 - 1, LIMIT, LIMIT - 1])
)
allowance_keys = st.tuples(
    st.sampled_from([1, 8453]),
    st.sampled_from([W1, W2]),
    st.sampled_from([T1, T2, T3]),
    st.sampled_from([S1, S2]),
)
balance_keys = st.tuples(
    st.sampled_from([1, 8453]), st.sampled_from([W1, W2]), st.sampled_from([T1, T2, T3])
)
snapshots = st.builds(
    lambda a, b: Snapshot(
        allowances={k: v for k, v in a.items() if v}, balances={k: v for k, v in b.items() if v}
    ),
    st.dictionaries(allowance_keys, amounts, max_size=12),
    st.dictionaries(balance_keys, amounts, max_size=8),
)


@given(snapshots, snapshots)
def test_applying_the_diff_yields_the_target(a: Snapshot, b: Snapshot) -> None:
    assert apply_events(a, diff_snapshots(a, b, threshold=T)) == b


@given(snapshots)
def test_diff_of_a_snapshot_with_itself_is_empty(a: Snapshot) -> None:
    assert diff_snapshots(a, a, threshold=T) == ()


@given(snapshots, snapshots)
def test_every_event_is_a_real_typed_change(a: Snapshot, b: Snapshot) -> None:
    for event in diff_snapshots(a, b, threshold=T):
        assert event.old != event.new
        assert (event.spender is None) == (event.change is Change.BALANCE_CHANGED)
        if event.change is Change.GRANTED:
            assert event.old == 0
        if event.change is Change.REVOKED:
            assert event.new == 0


@given(
    snapshots,
    st.lists(st.tuples(allowance_keys, amounts, amounts)),
    st.sets(
        st.tuples(st.sampled_from([1, 8453]), st.sampled_from([S1, S2]), st.sampled_from([W1, W2]))
    ),
)
def test_observe_changes_nothing_outside_coverage(
    a: Snapshot,
    observed: list[tuple[tuple[int, str, str, str], int, int]],
    covered: set[tuple[int, str, str]],
) -> None:
    coverages = [Coverage(chain_id=c, spender=s, wallets=frozenset({w})) for c, s, w in covered]
    positions = [
        position(w, t, s, bal, allow, chain_id=c)
        for (c, w, t, s), bal, allow in observed
        if (c, s, w) in covered
    ]
    after = observe(a, positions, coverages)
    for key, value in a.allowances.items():
        if (key[0], key[3], key[1]) not in covered:
            assert after.allowances[key] == value
    covered_wallets = {(c, w) for c, _, w in covered}
    for bkey, value in a.balances.items():
        if (bkey[0], bkey[1]) not in covered_wallets:
            assert after.balances[bkey] == value


# -- observe_changes is observe followed by diff_snapshots, computed in one pass ---------------

chains = st.sampled_from([1, 8453])
poll_tokens = st.sampled_from([T1, T2, T3, NATIVE_TOKEN])
token_sets = st.frozensets(poll_tokens, max_size=2)
any_snapshots = st.builds(
    lambda a, b: Snapshot(
        allowances={k: v for k, v in a.items() if v}, balances={k: v for k, v in b.items() if v}
    ),
    st.dictionaries(
        st.tuples(chains, st.sampled_from([W1, W2]), poll_tokens, st.sampled_from([S1, S2])),
        amounts,
        max_size=16,
    ),
    st.dictionaries(
        st.tuples(chains, st.sampled_from([W1, W2]), poll_tokens), amounts, max_size=10
    ),
)
# Positions need not lie inside a coverage: a failed batch's wallets are simply not covered.
poll_positions = st.lists(
    st.builds(
        lambda c, w, t, s, bal, allow: position(w, t, s, bal, allow, chain_id=c),
        chains,
        st.sampled_from([W1, W2]),
        poll_tokens,
        st.sampled_from([S1, S2]),
        amounts,
        amounts,
    ),
    max_size=16,
)
poll_coverages = st.lists(
    st.builds(
        lambda c, s, wallets, tokens, except_tokens: Coverage(
            chain_id=c, spender=s, wallets=wallets, tokens=tokens, except_tokens=except_tokens
        ),
        chains,
        st.sampled_from([S1, S2]),
        st.frozensets(st.sampled_from([W1, W2]), min_size=1),
        st.none() | token_sets,
        token_sets,
    ),
    max_size=4,
)


@given(
    any_snapshots,
    poll_positions,
    poll_coverages,
    st.sampled_from([T, 10**18, UINT256_MAX]),
)
def test_observe_changes_is_observe_then_diff(
    previous: Snapshot, positions: list[Position], coverages: list[Coverage], threshold: int
) -> None:
    expected = observe(previous, positions, coverages)
    current, events = observe_changes(previous, positions, coverages, threshold=threshold)
    assert current == expected
    assert events == diff_snapshots(previous, expected, threshold=threshold)


@given(any_snapshots, poll_positions, poll_coverages)
def test_observe_changes_leaves_its_inputs_alone(
    previous: Snapshot, positions: list[Position], coverages: list[Coverage]
) -> None:
    before = (dict(previous.allowances), dict(previous.balances))
    current, _ = observe_changes(previous, positions, coverages, threshold=T)
    assert (previous.allowances, previous.balances) == before
    assert current.allowances is not previous.allowances
    assert current.balances is not previous.balances


def test_observe_changes_orders_events_like_diff_snapshots() -> None:
    # A grant to W1 (sorts first) is seen after a revoke to W2 in the poll's own order.
    after, events = observe_changes(
        BEFORE,
        [position(W2, T1, S1, 9, 0), position(W1, T3, S1, 7, 4), position(W1, T1, S1, 7, 100)],
        [covering(S1, W1, W2)],
        threshold=T,
    )
    assert [(e.wallet, e.token, e.spender, e.change) for e in events] == [
        (W1, T3, S1, Change.GRANTED),
        (W2, T1, S1, Change.REVOKED),
        (W1, T3, None, Change.BALANCE_CHANGED),
    ]
    assert events == diff_snapshots(BEFORE, after, threshold=T)
