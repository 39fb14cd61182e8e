"""What recording a poll produces, as the poll cycle and the stores exchange it: the recorded
poll, a stored change event, what a sync of findings and a prune changed. Plain frozen values
(the ports in ``monitor.ports`` speak them; any store adapter builds them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from monitor.domain.model import BatchOutcome, PollResult
from monitor.domain.snapshot import AllowanceKey, ChangeEvent, Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedPoll:
    """What ``record_poll`` stored."""

    poll_id: int
    observed_at: datetime
    outcome: str
    events: tuple[ChangeEvent, ...]
    snapshot: Snapshot
    versions_written: int


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


def source_disagreements(result: PollResult) -> dict[AllowanceKey, dict[str, int]]:
    """The allowances that two sources of one poll both observed and read differently, with
    each source's amount (a source whose batch covered a key without a position read 0)."""
    by_source: dict[str, list[BatchOutcome]] = {}
    for batch in result.batches:
        if batch.ok:
            by_source.setdefault(batch.source, []).append(batch)
    if len(by_source) < 2:
        return {}
    read: dict[str, dict[AllowanceKey, int]] = {}
    for source, batches in by_source.items():
        values = read.setdefault(source, {})
        for batch in batches:
            for p in batch.positions:
                if not p.token.is_native:
                    values[p.key] = p.allowance
    # Where each source's batches looked: (chain, spender, wallet) -> the batches.
    looked: dict[str, dict[tuple[int, str, str], list[BatchOutcome]]] = {}
    for source, batches in by_source.items():
        index = looked.setdefault(source, {})
        for b in batches:
            for wallet in b.wallets:
                index.setdefault((b.chain_id, b.spender, wallet), []).append(b)
    # Keys some source read non-zero; each source that covered one read its amount (0 if
    # the batch covering it held no position).
    disagreements: dict[AllowanceKey, dict[str, int]] = {}
    for values in read.values():
        for key, amount in values.items():
            if not amount or key in disagreements:
                continue
            chain_id, wallet, token, spender = key
            amounts = {
                source: read[source].get(key, 0)
                for source, index in looked.items()
                if any(
                    token in b.tokens if b.tokens is not None else token not in b.except_tokens
                    for b in index.get((chain_id, spender, wallet), ())
                )
            }
            if len(amounts) > 1 and len(set(amounts.values())) > 1:
                disagreements[key] = amounts
    return disagreements
