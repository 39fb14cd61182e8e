"""What recording a poll produces, as the poll cycle and the stores exchange it: the recorded
poll, a stored change event, what a sync of findings and a prune changed. Plain frozen values
(the ports in ``monitor.ports`` speak them; any store adapter builds them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from monitor.domain.model import BatchOutcome, PollResult
from monitor.domain.snapshot import AllowanceKey, ChangeEvent, Snapshot, first_observations


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedPoll:
    """What ``record_poll`` stored."""

    poll_id: int
    observed_at: datetime
    outcome: str
    changes: tuple[ChangeEvent, ...]
    """The values this poll changed, as events; empty when ``baseline`` (see ``events``)."""
    snapshot: Snapshot
    versions_written: int
    baseline: bool = False
    """True when the store recorded this poll as the baseline, the first that observed
    anything, from an empty state: its every value is a first observation, and the store did
    not make those events (at 400,000 values they were 40 MB and a tenth of the first poll's
    CPU). A store may also leave this False and hand them in ``changes``."""

    @property
    def events(self) -> tuple[ChangeEvent, ...]:
        """Every value this poll changed, in ``diff_snapshots`` order: for the baseline, its
        every value as a first observation, made anew at each call (one object per value:
        ask ``change_count`` for how many)."""
        return first_observations(self.snapshot) if self.baseline else self.changes

    @property
    def change_count(self) -> int:
        """``len(events)``, without making them."""
        return self.versions_written if self.baseline else len(self.changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """A change event as stored: when and by which poll it was observed."""

    poll_id: int
    observed_at: datetime
    event: ChangeEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult:
    """What a prune deleted (or, in a dry run, would delete)."""

    cutoff_poll_id: int | None
    polls_deleted: int
    versions_deleted: int
    events_deleted: int


def poll_outcome(result: PollResult) -> str:
    """``failed`` when no batch answered, ``partial`` when some did not, else ``ok``."""
    if not result.batches or not any(b.ok for b in result.batches):
        return "failed"
    return "ok" if result.ok else "partial"


def scope_outcomes(result: PollResult) -> dict[tuple[int, str], bool]:
    """Per (chain_id, spender) the poll asked: did every batch of it succeed."""
    outcomes: dict[tuple[int, str], bool] = {}
    for batch in result.batches:
        key = (batch.chain_id, batch.spender)
        outcomes[key] = outcomes.get(key, True) and batch.ok
    return outcomes


def chain_outcomes(scopes: Mapping[tuple[int, str], bool]) -> dict[int, bool]:
    """Per chain: did every (chain, spender) scope of it succeed."""
    outcomes: dict[int, bool] = {}
    for (chain_id, _spender), ok in scopes.items():
        outcomes[chain_id] = outcomes.get(chain_id, True) and ok
    return outcomes


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingChanges:
    """How many findings a sync opened, resolved and updated."""

    opened: int
    resolved: int
    updated: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryFacts:
    """What discovery knows beyond the amounts, for the risk rules and the view."""

    approved_at: Mapping[AllowanceKey, datetime] = field(default_factory=dict)
    """When the newest ``Approval`` log of each discovered pair was mined (its block time)."""
    codeless_spenders: frozenset[tuple[int, str]] = frozenset()
    """(chain_id, spender) with no contract code: approvals to plain wallets."""
    discovered: frozenset[AllowanceKey] = frozenset()
    """Every pair some ``Approval`` log named."""


def _read_tokens(batch: BatchOutcome) -> frozenset[str] | None:
    """The tokens a successful batch can vouch for, zeros included: the ones it asked for by
    name, or (an aggregated answer, which leaves out empty and unlisted tokens alike) the
    ones it returned for some wallet. None: not a successful batch."""
    if not batch.ok:
        return None
    if batch.tokens is not None:
        return batch.tokens
    return frozenset(p.token.address for p in batch.positions)


def source_disagreements(result: PollResult) -> dict[AllowanceKey, dict[str, int]]:
    """The allowances that two sources of one poll both read, and read differently, with
    each source's amount. A source read a key when a successful batch of it vouches for the
    key's token (see ``_read_tokens``) for that wallet and spender; its amount is its
    position's, or 0 without one."""
    by_source: dict[str, list[BatchOutcome]] = {}
    for batch in result.batches:
        if batch.ok:
            by_source.setdefault(batch.source, []).append(batch)
    if len(by_source) < 2:
        return {}
    read: dict[str, dict[AllowanceKey, int]] = {}
    vouched: dict[str, dict[tuple[int, str, str], set[str]]] = {}
    for source, batches in by_source.items():
        values = read.setdefault(source, {})
        index = vouched.setdefault(source, {})
        for b in batches:
            tokens = _read_tokens(b) or frozenset()
            for p in b.positions:
                if not p.token.is_native:
                    values[p.key] = p.allowance
            for wallet in b.wallets:
                index.setdefault((b.chain_id, b.spender, wallet), set()).update(tokens)
    disagreements: dict[AllowanceKey, dict[str, int]] = {}
    for values in read.values():
        for key, amount in values.items():
            if not amount or key in disagreements:
                continue
            chain_id, wallet, token, spender = key
            amounts = {
                source: read[source].get(key, 0)
                for source, index in vouched.items()
                if token in index.get((chain_id, spender, wallet), ())
            }
            if len(amounts) > 1 and len(set(amounts.values())) > 1:
                disagreements[key] = amounts
    return disagreements


def prefer_source(result: PollResult, source: str) -> PollResult:
    """``result`` with ``source``'s reading winning wherever a successful batch of it read a
    key (a live on-chain read beats an indexer's): the other sources' positions take its
    allowance and balance there, 0 included (a revoke it saw), and are dropped when nothing
    is left. Coverage is unchanged."""
    allowances: dict[AllowanceKey, int] = {}
    balances: dict[tuple[int, str, str], int] = {}
    for b in result.batches:
        if b.source != source or not b.ok or b.tokens is None:
            continue
        found = {p.key: p for p in b.positions}
        for wallet in b.wallets:
            for token in b.tokens:
                key = (b.chain_id, wallet, token, b.spender)
                p = found.get(key)
                allowances[key] = p.allowance if p is not None else 0
                balances[(b.chain_id, wallet, token)] = p.balance if p is not None else 0
    if not allowances:
        return result
    batches = []
    for b in result.batches:
        if b.source == source or not b.positions:
            batches.append(b)
            continue
        positions = []
        changed = False
        for p in b.positions:
            allowance = allowances.get(p.key, p.allowance)
            balance = balances.get((p.chain_id, p.wallet, p.token.address), p.balance)
            if allowance == p.allowance and balance == p.balance:
                positions.append(p)
                continue
            changed = True
            if balance or (allowance and not p.token.is_native):
                positions.append(replace(p, allowance=allowance, balance=balance))
        # Rewritten positions are no longer what the answer's bytes said: no digest.
        batches.append(replace(b, positions=tuple(positions), answer_digest=None) if changed else b)
    return replace(result, batches=tuple(batches))
