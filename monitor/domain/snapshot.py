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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from monitor.domain.model import DEFAULT_UNLIMITED_THRESHOLD, Coverage, Position

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
    """The snapshot after a poll: ``previous`` updated only where a batch succeeded."""
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


def classify(old: int, new: int, threshold: int = DEFAULT_UNLIMITED_THRESHOLD) -> Change:
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


def diff_snapshots(
    old: Snapshot, new: Snapshot, *, threshold: int = DEFAULT_UNLIMITED_THRESHOLD
) -> tuple[ChangeEvent, ...]:
    """Every difference between ``old`` and ``new`` as a typed event, in a stable order."""
    events: list[ChangeEvent] = []
    for key in sorted(old.allowances.keys() | new.allowances.keys()):
        before, after = old.allowance(key), new.allowance(key)
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
    for bkey in sorted(old.balances.keys() | new.balances.keys()):
        before, after = old.balance(bkey), new.balance(bkey)
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
