"""Snapshots of what was observed, and the pure functions over them.

A ``Snapshot`` maps every (chain, wallet, token, spender) allowance and every
(chain, wallet, token) balance to a non-zero amount; absent means zero. The native coin's
2^256-1 "allowance" is a placeholder, not an approval, so it never enters a snapshot.

A poll does not see everything: a batch can fail. ``observe`` therefore takes the previous
snapshot, the positions a poll returned and the ``Coverage`` of each batch that succeeded,
and changes only what was covered. Inside covered ground an absent position is a real zero
(1inch's ``filterEmpty`` drops tokens whose balance and allowance are both zero); outside it,
the previous value stands. That is how a revoke and a failed batch are told apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from monitor.domain.model import Coverage, Position

AllowanceKey = tuple[int, str, str, str]
"""(chain_id, wallet, token, spender), addresses lowercase."""
BalanceKey = tuple[int, str, str]
"""(chain_id, wallet, token), addresses lowercase."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Non-zero allowances and balances at one moment. Treat the mappings as read-only."""

    allowances: Mapping[AllowanceKey, int] = field(default_factory=dict)
    balances: Mapping[BalanceKey, int] = field(default_factory=dict)

    def allowance(self, key: AllowanceKey) -> int:
        return self.allowances.get(key, 0)

    def balance(self, key: BalanceKey) -> int:
        return self.balances.get(key, 0)


EMPTY_SNAPSHOT = Snapshot()


class Change(StrEnum):
    GRANTED = "granted"
    INCREASED = "increased"
    DECREASED = "decreased"
    REVOKED = "revoked"
    BECAME_UNLIMITED = "became_unlimited"
    NO_LONGER_UNLIMITED = "no_longer_unlimited"
    BALANCE_CHANGED = "balance_changed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeEvent:
    """One value that differs between two snapshots. ``spender`` is None for a balance."""

    chain_id: int
    wallet: str
    token: str
    spender: str | None
    change: Change
    old: int
    new: int


def observe(
    previous: Snapshot, positions: Iterable[Position], coverages: Iterable[Coverage]
) -> Snapshot:
    """The snapshot after a poll: ``previous`` updated only where a batch succeeded.

    The plain definition; ``observe_changes`` computes the same snapshot with its events.
    """
    allowance_covered, balance_covered = _coverage_tests(coverages)
    allowances = {k: v for k, v in previous.allowances.items() if not allowance_covered(k)}
    balances = {k: v for k, v in previous.balances.items() if not balance_covered(k)}
    seen_balances: set[BalanceKey] = set()
    for p in positions:
        if not p.token.is_native and p.allowance:
            allowances[p.key] = p.allowance
        balance_key = (p.chain_id, p.wallet, p.token.address)
        # Every spender's answer repeats the balance; the first one observed wins.
        if balance_key not in seen_balances:
            seen_balances.add(balance_key)
            if p.balance:
                balances[balance_key] = p.balance
    return Snapshot(allowances=allowances, balances=balances)


def observe_changes(
    previous: Snapshot,
    positions: Iterable[Position],
    coverages: Iterable[Coverage],
    *,
    threshold: int,
) -> tuple[Snapshot, tuple[ChangeEvent, ...]]:
    """``observe`` and ``diff_snapshots`` in one pass: the snapshot after a poll and its
    events, in ``diff_snapshots`` order.

    One Python-level pass over the positions; beyond it the work grows with what changed
    (copying the previous snapshot, and finding the previous keys a poll did not return when
    there are any, are done by dict and set operations in C). Only changed keys are sorted.
    """
    old_allowances, old_balances = previous.allowances, previous.balances
    old_allowance = old_allowances.get
    polled_allowances: dict[AllowanceKey, int] = {}
    first_balances: dict[BalanceKey, int] = {}
    changed_allowances: set[AllowanceKey] = set()
    for p in positions:
        token = p.token
        allowance = p.allowance
        if allowance and not token.is_native:
            key = (p.chain_id, p.wallet, token.address, p.spender)
            polled_allowances[key] = allowance
            if old_allowance(key) != allowance:
                changed_allowances.add(key)
        # Every spender's answer repeats the balance; the first one observed wins.
        first_balances.setdefault((p.chain_id, p.wallet, token.address), p.balance)
    old_balance = old_balances.get
    polled_balances = {k: v for k, v in first_balances.items() if v}
    changed_balances = {k for k, v in polled_balances.items() if old_balance(k) != v}

    # A copy of the previous state (dict copies reuse the stored hashes) with only the changed
    # values written: updating with every polled value would hash and compare every key in
    # one C call, holding the GIL (and so the event loop) for 120 ms at 300,000 positions,
    # to write values that are already there.
    allowances = dict(old_allowances)
    for key in changed_allowances:
        allowances[key] = polled_allowances[key]
    balances = dict(old_balances)
    for balance_key in changed_balances:
        balances[balance_key] = polled_balances[balance_key]
    # Only a previous value the poll did not return can have been observed as zero. Which
    # ones there are is worth computing only when the poll returned fewer previous keys than
    # there are: the keys it added are among the changed ones.
    added_allowances = sum(1 for k in changed_allowances if k not in old_allowances)
    added_balances = sum(1 for k in changed_balances if k not in old_balances)
    unset_allowances: Iterable[AllowanceKey] = ()
    unset_balances: Iterable[BalanceKey] = ()
    if len(polled_allowances) - added_allowances < len(old_allowances):
        unset_allowances = old_allowances.keys() - polled_allowances.keys()
    if len(polled_balances) - added_balances < len(old_balances):
        unset_balances = old_balances.keys() - polled_balances.keys()
    if unset_allowances or unset_balances:
        allowance_covered, balance_covered = _coverage_tests(coverages)
        for key in unset_allowances:
            if allowance_covered(key):
                del allowances[key]
                changed_allowances.add(key)
        for balance_key in unset_balances:
            if balance_covered(balance_key):
                del balances[balance_key]
                changed_balances.add(balance_key)

    events = _events(
        old_allowances,
        allowances,
        changed_allowances,
        old_balances,
        balances,
        changed_balances,
        threshold,
    )
    return Snapshot(allowances=allowances, balances=balances), events


def _coverage_tests(
    coverages: Iterable[Coverage],
) -> tuple[Callable[[AllowanceKey], bool], Callable[[BalanceKey], bool]]:
    """Whether a successful batch observed an allowance key, and a balance key."""
    allowance_cover: dict[tuple[int, str, str], list[Coverage]] = {}
    balance_cover: dict[tuple[int, str], list[Coverage]] = {}
    for coverage in coverages:
        for wallet in coverage.wallets:
            allowance_cover.setdefault((coverage.chain_id, coverage.spender, wallet), []).append(
                coverage
            )
            balance_cover.setdefault((coverage.chain_id, wallet), []).append(coverage)

    def allowance_covered(key: AllowanceKey) -> bool:
        chain_id, wallet, token, spender = key
        found = allowance_cover.get((chain_id, spender, wallet), ())
        return any(c.covers_token(token) for c in found)

    def balance_covered(key: BalanceKey) -> bool:
        chain_id, wallet, token = key
        return any(c.covers_token(token) for c in balance_cover.get((chain_id, wallet), ()))

    return allowance_covered, balance_covered


def classify(old: int, new: int, threshold: int) -> Change:
    """The kind of an allowance change from ``old`` to ``new`` (they must differ)."""
    if old == new:
        raise ValueError("an unchanged allowance is not a change")
    if old == 0:
        return Change.GRANTED
    if new == 0:
        return Change.REVOKED
    if old < threshold <= new:
        return Change.BECAME_UNLIMITED
    if new < threshold <= old:
        return Change.NO_LONGER_UNLIMITED
    return Change.INCREASED if new > old else Change.DECREASED


def diff_snapshots(old: Snapshot, new: Snapshot, *, threshold: int) -> tuple[ChangeEvent, ...]:
    """Every difference between ``old`` and ``new`` as a typed event, in a stable order."""
    return _events(
        old.allowances,
        new.allowances,
        old.allowances.keys() | new.allowances.keys(),
        old.balances,
        new.balances,
        old.balances.keys() | new.balances.keys(),
        threshold,
    )


def first_observations(snapshot: Snapshot) -> tuple[ChangeEvent, ...]:
    """``diff_snapshots`` from nothing to ``snapshot``: every allowance granted, every balance
    changed from zero (from zero, the unlimited threshold plays no part)."""
    return _events(
        {},
        snapshot.allowances,
        snapshot.allowances.keys(),
        {},
        snapshot.balances,
        snapshot.balances.keys(),
        threshold=0,
    )


def _events(
    old_allowances: Mapping[AllowanceKey, int],
    new_allowances: Mapping[AllowanceKey, int],
    allowance_keys: Iterable[AllowanceKey],
    old_balances: Mapping[BalanceKey, int],
    new_balances: Mapping[BalanceKey, int],
    balance_keys: Iterable[BalanceKey],
    threshold: int,
) -> tuple[ChangeEvent, ...]:
    """The events of the given keys whose value differs (absent is zero): allowances, then
    balances, each in key order."""
    events: list[ChangeEvent] = []
    for key in sorted(allowance_keys):
        before, after = old_allowances.get(key, 0), new_allowances.get(key, 0)
        if before != after:
            chain_id, wallet, token, spender = key
            events.append(
                ChangeEvent(
                    chain_id=chain_id,
                    wallet=wallet,
                    token=token,
                    spender=spender,
                    change=classify(before, after, threshold),
                    old=before,
                    new=after,
                )
            )
    for bkey in sorted(balance_keys):
        before, after = old_balances.get(bkey, 0), new_balances.get(bkey, 0)
        if before != after:
            chain_id, wallet, token = bkey
            events.append(
                ChangeEvent(
                    chain_id=chain_id,
                    wallet=wallet,
                    token=token,
                    spender=None,
                    change=Change.BALANCE_CHANGED,
                    old=before,
                    new=after,
                )
            )
    return tuple(events)


def apply_events(snapshot: Snapshot, events: Iterable[ChangeEvent]) -> Snapshot:
    """``snapshot`` with each event's new value in place (zero removes the entry)."""
    allowances = dict(snapshot.allowances)
    balances = dict(snapshot.balances)
    for event in events:
        if event.spender is None:
            bkey = (event.chain_id, event.wallet, event.token)
            if event.new:
                balances[bkey] = event.new
            else:
                balances.pop(bkey, None)
        else:
            akey = (event.chain_id, event.wallet, event.token, event.spender)
            if event.new:
                allowances[akey] = event.new
            else:
                allowances.pop(akey, None)
    return Snapshot(allowances=allowances, balances=balances)
