"""The ports of the poll cycle: every interface ``Monitor`` talks through, in one place.

The poll cycle (``monitor.daemon.poll_cycle.Monitor``) polls a ``PositionSource``, records the
result in a ``PollStore``, values approvals with a ``PriceSource`` and reads the time from a
``Clock``. Each port has a real adapter and an in-memory one:

============== ========================================= ====================================
port           real adapter                              in-memory adapter (``monitor.memory``)
============== ========================================= ====================================
PositionSource ``monitor.poller.OneInchPositions``       ``MemoryPositions``
               (the 1inch Balance API)
PollStore      ``monitor.store.snapshots.SqlSnapshotStore`` ``MemoryStore``
               (SQLite, PostgreSQL)
PriceSource    ``monitor.oneinch.prices.SpotPriceSource`` ``StaticPriceSource``
               (the 1inch Spot Price API)
Clock          ``monitor.ports.utc_now``                 ``ManualClock``
============== ========================================= ====================================

Tests and dry runs wire the in-memory adapters; ``tests/test_poll_cycle.py`` runs the whole
cycle on them in milliseconds, and ``tests/test_poll_store_contract.py`` holds the memory and
SQL stores to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from monitor.domain.model import BatchOutcome, PollResult, Token
from monitor.domain.records import (
    DiscoveryFacts,
    FindingChanges,
    PruneResult,
    RecordedPoll,
    StoredEvent,
)
from monitor.domain.snapshot import Change, Snapshot
from monitor.risk.rules import Finding

__all__ = [
    "ApprovalFacts",
    "Clock",
    "PollStore",
    "PositionSource",
    "PriceSource",
    "utc_now",
]

Clock = Callable[[], datetime]
"""The time now, timezone-aware UTC. Injected everywhere a decision depends on it."""


def utc_now() -> datetime:
    """The real ``Clock``."""
    return datetime.now(UTC)


class PositionSource(Protocol):
    """Where positions come from: one poll of everything the source watches."""

    async def poll(
        self,
        *,
        on_start: Callable[[int], None] | None = None,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> PollResult:
        """Poll once. ``on_start`` is told how many batches the poll makes before the first
        starts; ``on_batch`` gets each batch's outcome as it finishes.

        Never raises for upstream failures: a batch that failed is in the result as failed
        (it observed nothing, so nothing may be inferred from the absence of its positions),
        never as empty.
        """
        ...


class ApprovalFacts(Protocol):
    """What a position source knows of approvals beyond their amounts: the chain reader
    (``monitor.chain.source.ChainPositions``) knows which spenders have no contract code and
    when each discovered approval was approved (its ``Approval`` log's block time)."""

    def facts(self) -> DiscoveryFacts:
        """What is known now (after the latest poll)."""
        ...

    async def load(self) -> DiscoveryFacts:
        """What earlier runs stored, for the first evaluation after a restart. Raises
        ``monitor.errors.StoreError`` when it cannot be read."""
        ...


class PriceSource(Protocol):
    """USD prices of tokens, per whole token."""

    async def usd_prices(self, chain_id: int, tokens: Sequence[str]) -> dict[str, Decimal]:
        """Prices of those ``tokens`` (any address case) that have one, keyed by lowercase
        address. A token without a known price is absent. Never raises for upstream
        failures."""
        ...


class PollStore(Protocol):
    """Where poll results go, and where the state comes from at start.

    Recording a poll compares it with the latest recorded state and stores what changed
    (``RecordedPoll.events``): within what each successful batch covered, a value missing
    from the poll is a zero; a failed batch changes nothing. The baseline, recorded over an
    empty state, may be stored as values alone and flagged ``RecordedPoll.baseline``: its
    events are then its first observations, made only when asked. Every method raises
    ``monitor.errors.StoreError`` when the store fails.
    """

    async def record_poll(self, result: PollResult) -> RecordedPoll:
        """Store one poll atomically: its record, its scopes and the values that changed."""
        ...

    async def record_failed_poll(
        self, *, started_at: datetime, finished_at: datetime, error: str
    ) -> int:
        """A poll that produced nothing usable (timed out, cancelled): its record only."""
        ...

    async def latest(self) -> Snapshot:
        """The newest recorded state (empty before the first poll)."""
        ...

    async def tokens(self) -> dict[tuple[int, str], Token]:
        """The metadata of every token any poll mentioned, by (chain_id, address)."""
        ...

    async def last_successes(self) -> dict[tuple[int, str], datetime]:
        """Per (chain_id, spender): when a poll last observed every batch of it."""
        ...

    async def upstream_status(self) -> dict[int, bool]:
        """Per chain: whether every batch of the newest poll with batches succeeded."""
        ...

    async def last_poll(self) -> tuple[datetime, str] | None:
        """When the newest recorded poll finished, and its outcome; None before any."""
        ...

    async def baseline_poll_id(self) -> int | None:
        """The poll whose values are the baseline of the retained history: its "changes"
        are first observations, not events that happened then."""
        ...

    async def events(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        chain_id: int | None = None,
        wallet: str | None = None,
        spender: str | None = None,
        changes: Sequence[Change] | None = None,
        after_poll: int | None = None,
        latest_per_key: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """Recorded change events, oldest first, filtered by every argument given;
        ``latest_per_key``: only the newest of each (chain, wallet, token, spender);
        ``limit``: only the newest ``limit``."""
        ...

    async def sync_findings(self, found: Iterable[Finding], *, now: datetime) -> FindingChanges:
        """Open, update and resolve the recorded findings to match ``found``."""
        ...

    async def prune(self, *, older_than: datetime) -> PruneResult:
        """Forget polls that finished before ``older_than``, keeping every later snapshot
        exact."""
        ...
