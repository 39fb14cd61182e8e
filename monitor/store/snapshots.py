"""The SQL snapshot store: record polls, reconstruct any past snapshot, list changes, prune.

Writes grow with change, not with polls: a poll writes its poll row and one row per (chain,
spender) scope, and then only the allowance and balance values that changed, plus their
change events, all in one transaction. Any past snapshot is the latest version of every key
at or before the last poll that finished by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

from monitor.domain.model import (
    BatchOutcome,
    Coverage,
    PollResult,
    Position,
    Token,
)
from monitor.domain.records import (
    FindingChanges,
    PruneResult,
    RecordedPoll,
    StoredEvent,
    poll_outcome,
)
from monitor.domain.snapshot import (
    EMPTY_SNAPSHOT,
    BalanceKey,
    Change,
    ChangeEvent,
    Snapshot,
    observe,
    observe_changes,
)
from monitor.errors import StoreError
from monitor.risk.rules import Finding
from monitor.store import findings, queries
from monitor.store.bulk import insert_rows
from monitor.store.findings import FindingsLedger, StoredFinding
from monitor.store.migrate import describe_database
from monitor.store.schema import (
    AllowanceVersion,
    BalanceVersion,
    ChangeEventRow,
    Poll,
    PollScope,
    TokenRow,
)

log = logging.getLogger(__name__)

DATABASE_ERRORS = (SQLAlchemyError, OSError)
"""What a failing database raises: asyncpg's ConnectionRefusedError, for one, is a plain
OSError that SQLAlchemy does not wrap."""

POLL_LOCK_KEY = 0x65786D70  # "exmp": serialises poll recording across processes (PostgreSQL)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSnapshot:
    """A reconstructed snapshot, the poll it stands at, and the tokens it mentions."""

    poll_id: int
    observed_at: datetime
    snapshot: Snapshot
    tokens: Mapping[tuple[int, str], Token]


class SqlSnapshotStore:
    """Snapshot history in SQLite or PostgreSQL (the schema must be migrated to head).

    The latest snapshot and the open findings are cached in memory; before each write the
    store checks, under a lock, that no other process wrote a poll since, and reloads if one
    did (the findings at their next sync).
    """

    def __init__(self, engine: AsyncEngine, *, unlimited_threshold: int) -> None:
        self._engine = engine
        self._threshold = unlimited_threshold
        self._snapshot: Snapshot | None = None
        self._last_poll_id: int | None = None
        self._tokens: dict[tuple[int, str], tuple[str, str, int | None, str]] | None = None
        self._last_batches: tuple[BatchSignature, ...] | None = None
        """What the poll that made ``_snapshot`` observed (None when it was read from the
        database): a poll that observes exactly that again cannot change it (``_repeats``)."""
        self._findings = FindingsLedger(engine, lock=self._lock)

    # -- writing ------------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The engine (the discovery store shares it)."""
        return self._engine

    async def record_poll(self, result: PollResult) -> RecordedPoll:
        """Store one poll in one transaction. Only what successful batches covered changes.

        If the transaction fails, a bare failed poll row is written in its place (when the
        database still accepts it) and ``StoreError`` is raised.
        """
        try:
            return await self._record(result)
        except asyncio.CancelledError:
            # Cancelled anywhere in the transaction, the commit included: the caches (the
            # snapshot, the tokens) may be ahead of what the database holds.
            self._forget()
            raise
        except DATABASE_ERRORS as exc:
            self._forget()  # the caches may be ahead of a rolled-back transaction
            problem = f"could not record poll: {_describe(exc)}"
            with contextlib.suppress(StoreError):  # the database may be down altogether
                await self.record_failed_poll(
                    started_at=result.started_at, finished_at=result.finished_at, error=problem
                )
            raise StoreError(problem) from exc

    def _forget(self) -> None:
        """Drop what is cached of the database: the next poll reads it again."""
        self._snapshot = None
        self._tokens = None
        self._last_batches = None

    async def record_failed_poll(
        self, *, started_at: datetime, finished_at: datetime, error: str
    ) -> int:
        """A poll that produced nothing usable (timed out, crashed): its row and nothing else."""
        try:
            async with self._engine.begin() as conn:
                row = await conn.execute(
                    insert(Poll)
                    .values(
                        started_at=started_at,
                        finished_at=finished_at,
                        outcome="failed",
                        batches=0,
                        batches_failed=0,
                        positions=0,
                        events=0,
                        versions_written=0,
                        error=error[:2000],
                    )
                    .returning(Poll.id)
                )
                return int(row.scalar_one())
        except DATABASE_ERRORS as exc:
            raise StoreError(f"could not record failed poll: {_describe(exc)}") from exc

    async def _record(self, result: PollResult) -> RecordedPoll:
        outcome = poll_outcome(result)
        async with self._engine.begin() as conn:
            await self._lock(conn)
            previous_poll_id = await conn.scalar(select(func.max(Poll.id)))
            if self._snapshot is None or previous_poll_id != self._last_poll_id:
                self._snapshot = await queries.latest_snapshot(conn)
                self._tokens = await queries.load_tokens(conn)
                self._last_batches = None
                self._findings.invalidate()  # whoever wrote that poll may have synced findings
            previous = self._snapshot
            repeated = _repeats(result.batches, self._last_batches)
            positions = () if repeated else result.positions  # a copy of every one
            # The first poll that observes anything is the baseline: its "changes" are first
            # observations, stored once, as its versions (``events`` reads them back).
            baseline = outcome != "failed" and await queries.first_observing_poll(conn) is None
            # Nothing observed before it, so nothing to compare with: the baseline's values are
            # all first observations. It is observed without making them into events.
            from_nothing = baseline and not previous.allowances and not previous.balances
            current: Snapshot = previous
            events: tuple[ChangeEvent, ...] = ()
            if not repeated:
                # (Repeated: the very positions, observed as completely, that made the
                # previous snapshot. Observing them again over it changes nothing, as
                # ``observe_changes`` is idempotent, so there is nothing to compare.)
                # Pure CPU work over every position: off the loop, which keeps serving.
                current, events = await asyncio.to_thread(
                    _changes,
                    None if from_nothing else previous,
                    positions,
                    result.coverages(),
                    self._threshold,
                )
            stored_events = () if baseline else events
            written = (
                len(current.allowances) + len(current.balances) if from_nothing else len(events)
            )
            if not written:
                # Nothing changed: the previous snapshot itself, so that whoever compares the
                # two (the risk evaluator, the metrics) finds them identical at once.
                current = previous
            poll_id = int(
                (
                    await conn.execute(
                        insert(Poll)
                        .values(
                            started_at=result.started_at,
                            finished_at=result.finished_at,
                            outcome=outcome,
                            batches=len(result.batches),
                            batches_failed=len(result.failures),
                            positions=result.position_count,
                            events=len(stored_events),
                            versions_written=written,  # one new version per changed value
                            error=_errors(result),
                        )
                        .returning(Poll.id)
                    )
                ).scalar_one()
            )
            await _insert_scopes(conn, poll_id, result)
            # Rows are made from the events (or the baseline's values) a chunk at a time, as
            # they are written.
            await insert_rows(
                conn,
                AllowanceVersion,
                ("chain_id", "wallet", "token", "spender", "poll_id", "amount"),
                (
                    (
                        (chain_id, wallet, token, spender, poll_id, amount)
                        for (chain_id, wallet, token, spender), amount in current.allowances.items()
                    )
                    if from_nothing
                    else (
                        (e.chain_id, e.wallet, e.token, e.spender, poll_id, e.new)
                        for e in events
                        if e.spender is not None
                    )
                ),
            )
            await insert_rows(
                conn,
                BalanceVersion,
                ("chain_id", "wallet", "token", "poll_id", "amount"),
                (
                    (
                        (chain_id, wallet, token, poll_id, amount)
                        for (chain_id, wallet, token), amount in current.balances.items()
                    )
                    if from_nothing
                    else (
                        (e.chain_id, e.wallet, e.token, poll_id, e.new)
                        for e in events
                        if e.spender is None
                    )
                ),
            )
            observed_at = result.finished_at
            await insert_rows(
                conn,
                ChangeEventRow,
                EVENT_COLUMNS,
                (_event_row(e, poll_id, observed_at) for e in stored_events),
            )
            if not repeated:  # the same positions hold the same tokens as last time
                await self._upsert_tokens(conn, positions)
        self._snapshot = current
        self._last_poll_id = poll_id
        self._last_batches = tuple(map(_signature, result.batches))
        return RecordedPoll(
            poll_id=poll_id,
            observed_at=result.finished_at,
            outcome=outcome,
            changes=events,
            snapshot=current,
            versions_written=written,
            baseline=from_nothing,
        )

    async def _lock(self, conn: AsyncConnection) -> None:
        if conn.dialect.name == "postgresql":
            await conn.execute(select(func.pg_advisory_xact_lock(POLL_LOCK_KEY)))
        else:
            # Take SQLite's write lock before reading the head, so that two writers cannot
            # both diff against the same previous poll.
            await conn.execute(text("DELETE FROM polls WHERE 0"))

    async def _upsert_tokens(self, conn: AsyncConnection, positions: Iterable[Position]) -> None:
        known = self._tokens if self._tokens is not None else await queries.load_tokens(conn)
        changed: dict[tuple[int, str], dict[str, Any]] = {}
        # A batch's positions share its Token objects: each is judged once, and judging it
        # again could only come to the same answer.
        considered: set[int] = set()
        for position in positions:
            token = position.token
            if id(token) in considered:
                continue
            considered.add(id(token))
            key = (token.chain_id, token.address)
            if key in changed:
                continue
            values = (token.symbol, token.name, token.decimals, " ".join(token.tags))
            old = known.get(key)
            if old is not None and (old == values or (not token.symbol and old[0])):
                continue  # unchanged, or a custom token answer with less metadata than we have
            changed[key] = {
                "chain_id": token.chain_id,
                "address": token.address,
                "symbol": values[0],
                "name": values[1],
                "decimals": values[2],
                "tags": values[3],
            }
        if not changed:
            return
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        statement = dialect_insert(TokenRow)
        statement = statement.on_conflict_do_update(
            index_elements=[TokenRow.chain_id, TokenRow.address],
            set_={
                "symbol": statement.excluded.symbol,
                "name": statement.excluded.name,
                "decimals": statement.excluded.decimals,
                "tags": statement.excluded.tags,
            },
        )
        await conn.execute(statement, list(changed.values()))
        for key, row in changed.items():
            known[key] = (row["symbol"], row["name"], row["decimals"], row["tags"])
        self._tokens = known

    # -- reading ------------------------------------------------------------------------------

    async def latest(self) -> Snapshot:
        """The newest snapshot (empty before the first poll).

        It becomes the cache the next poll is compared with, so that the first poll after a
        restart does not read it again.
        """
        async with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # A poll being recorded may hold an id below the visible head (failed polls
                # take no lock): wait for it, or the cache would miss its values for good.
                await conn.execute(select(func.pg_advisory_xact_lock_shared(POLL_LOCK_KEY)))
            # (SQLite commits writers one at a time, so every poll up to the head is complete;
            # the values at or before it do not change, whatever commits meanwhile.)
            head = await conn.scalar(select(func.max(Poll.id)))
            if self._snapshot is not None and head == self._last_poll_id:
                return self._snapshot
            snapshot = (
                EMPTY_SNAPSHOT if head is None else await queries.snapshot_at_poll(conn, head)
            )
            tokens = await queries.load_tokens(conn)
        self._snapshot, self._last_poll_id, self._tokens = snapshot, head, tokens
        self._last_batches = None
        # As in _record: whoever wrote the polls since may have synced findings, and the next
        # poll will not see the head move any more.
        self._findings.invalidate()
        return snapshot

    async def snapshot_at(self, at: datetime) -> StoredSnapshot:
        """The snapshot as known at ``at``: the state after the last poll finished by then."""
        try:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(Poll.id, Poll.finished_at)
                        .where(Poll.finished_at <= at)
                        .order_by(Poll.finished_at.desc(), Poll.id.desc())
                        .limit(1)
                    )
                ).first()
                if row is None:
                    first = await conn.scalar(select(func.min(Poll.finished_at)))
                    where = f"history starts at {first.isoformat()}" if first else "no polls yet"
                    raise StoreError(f"no snapshot at {at.isoformat()}: {where}")
                snapshot = await queries.snapshot_at_poll(conn, row.id)
                tokens = await queries.tokens_of(conn, snapshot)
        except DATABASE_ERRORS as exc:
            raise StoreError(f"could not read snapshot: {_describe(exc)}") from exc
        return StoredSnapshot(
            poll_id=row.id, observed_at=row.finished_at, snapshot=snapshot, tokens=tokens
        )

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
        """Change events, oldest first, filtered by any of the arguments.

        The baseline poll's events are its first observations, read from its versions (they
        are stored once, as values); every later poll's are stored as events.
        ``latest_per_key`` keeps only the newest matching event of each (chain, wallet, token,
        spender), so that the answer is bounded by the portfolio, not by time. ``limit``
        keeps only the newest ``limit`` matching events (still returned oldest first).
        """
        conditions: list[ColumnElement[bool]] = []
        if changes is not None:
            conditions.append(ChangeEventRow.change.in_([c.value for c in changes]))
        if after_poll is not None:
            conditions.append(ChangeEventRow.poll_id > after_poll)
        if since is not None:
            conditions.append(ChangeEventRow.observed_at >= since)
        if until is not None:
            conditions.append(ChangeEventRow.observed_at <= until)
        if chain_id is not None:
            conditions.append(ChangeEventRow.chain_id == chain_id)
        if wallet is not None:
            conditions.append(ChangeEventRow.wallet == wallet)
        if spender is not None:
            conditions.append(ChangeEventRow.spender == spender)
        if latest_per_key:
            newest = (
                select(func.max(ChangeEventRow.id))
                .where(and_(True, *conditions))
                .group_by(
                    ChangeEventRow.chain_id,
                    ChangeEventRow.wallet,
                    ChangeEventRow.token,
                    ChangeEventRow.spender,
                )
            )
            conditions = [ChangeEventRow.id.in_(newest)]
        query = select(ChangeEventRow).where(and_(True, *conditions))
        if limit is None:
            query = query.order_by(ChangeEventRow.observed_at, ChangeEventRow.id)
        else:
            query = query.order_by(
                ChangeEventRow.observed_at.desc(), ChangeEventRow.id.desc()
            ).limit(limit)
        try:
            async with self._engine.connect() as conn:
                rows = list((await conn.execute(query)).all())
                first = await queries.first_observing_poll(conn)
                baseline: list[StoredEvent] = []
                if first is not None and (after_poll is None or first.poll_id > after_poll):
                    baseline = await queries.first_observations(
                        conn,
                        first,
                        since=since,
                        until=until,
                        chain_id=chain_id,
                        wallet=wallet,
                        spender=spender,
                        changes=changes,
                    )
        except DATABASE_ERRORS as exc:
            raise StoreError(f"could not read events: {_describe(exc)}") from exc
        if limit is not None:
            rows.reverse()
        stored = [
            StoredEvent(
                poll_id=r.poll_id,
                observed_at=r.observed_at,
                event=ChangeEvent(
                    chain_id=r.chain_id,
                    wallet=r.wallet,
                    token=r.token,
                    spender=r.spender,
                    change=Change(r.change),
                    old=r.old,
                    new=r.new,
                ),
            )
            for r in rows
        ]
        if not baseline:
            return stored
        # The baseline's observations are the oldest of all: before every stored event.
        if latest_per_key:
            later = {_event_key(s.event) for s in stored}
            baseline = [b for b in baseline if _event_key(b.event) not in later]
        if limit is not None:
            room = max(0, limit - len(stored))
            baseline = baseline[max(0, len(baseline) - room) :] if room else []
        return baseline + stored

    async def tokens(self) -> dict[tuple[int, str], Token]:
        async with self._engine.connect() as conn:
            return {
                key: queries.token_of(key, values)
                for key, values in (await queries.load_tokens(conn)).items()
            }

    async def baseline_poll_id(self) -> int | None:
        """The poll whose values are the baseline of the retained history: its "changes" are
        first observations (or, after a prune, the values kept at the cutoff), not events
        that happened then. It is the first poll that observed anything: one that found
        only balances, or nothing at all, is the baseline all the same, and an approval
        granted after it is a change."""
        try:
            async with self._engine.connect() as conn:
                first = await queries.first_observing_poll(conn)
                return None if first is None else first.poll_id
        except DATABASE_ERRORS as exc:
            raise StoreError(f"could not read the baseline poll: {_describe(exc)}") from exc

    async def last_successes(self) -> dict[tuple[int, str], datetime]:
        """Per (chain_id, spender): when a poll last observed every batch of it."""
        async with self._engine.connect() as conn:
            return await queries.last_successes(conn)

    async def upstream_status(self) -> dict[int, bool]:
        """Per chain: whether every batch of the newest poll succeeded."""
        async with self._engine.connect() as conn:
            return await queries.upstream_status(conn)

    async def last_poll(self) -> tuple[datetime, str] | None:
        """When the newest recorded poll finished, and its outcome; None before any poll."""
        query = select(Poll.finished_at, Poll.outcome).order_by(Poll.id.desc()).limit(1)
        try:
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
        except DATABASE_ERRORS as exc:
            raise StoreError(f"could not read the last poll: {_describe(exc)}") from exc
        return None if row is None else (row.finished_at, row.outcome)

    async def sync_findings(self, found: Iterable[Finding], *, now: datetime) -> FindingChanges:
        """Open, update and resolve stored findings to match ``found``, writing only what
        changed (see ``FindingsLedger``)."""
        return await self._findings.sync(found, now=now)

    async def findings(self, *, include_resolved: bool = False) -> list[StoredFinding]:
        return await findings.list_findings(self._engine, include_resolved=include_resolved)

    # -- retention ----------------------------------------------------------------------------

    async def prune(self, *, older_than: datetime, dry_run: bool = False) -> PruneResult:
        """Forget polls that finished before ``older_than``, keeping every snapshot from the
        last of them that observed anything (the cutoff) onward reconstructable: each key's
        value at the cutoff is kept (moved to it), older values and their events go.

        ``dry_run`` counts what would go, with the same selection, and changes nothing.
        """
        try:
            async with self._engine.begin() as conn:
                if not dry_run:
                    await self._lock(conn)
                # The values kept are moved to the cutoff poll: never a failed one, which
                # records nothing (``db check`` holds that).
                cutoff = await conn.scalar(
                    select(Poll.id)
                    .where(Poll.finished_at <= older_than, Poll.outcome != "failed")
                    .order_by(Poll.finished_at.desc(), Poll.id.desc())
                    .limit(1)
                )
                if cutoff is None:
                    return PruneResult(
                        cutoff_poll_id=None, polls_deleted=0, versions_deleted=0, events_deleted=0
                    )
                if dry_run:
                    return await _count_prunable(conn, cutoff)
                versions_deleted = 0
                for table, key_columns in _VERSIONED:
                    versions_deleted += await _prune_versions(conn, table, key_columns, cutoff)
                events_deleted = (
                    await conn.execute(delete(ChangeEventRow).where(_prunable_events(cutoff)))
                ).rowcount
                # The cutoff is the baseline now (the first poll left), stored once.
                await conn.execute(update(Poll).where(Poll.id == cutoff).values(events=0))
                await conn.execute(delete(PollScope).where(PollScope.poll_id < cutoff))
                polls_deleted = (await conn.execute(delete(Poll).where(Poll.id < cutoff))).rowcount
        except DATABASE_ERRORS as exc:
            raise StoreError(f"could not prune: {_describe(exc)}") from exc
        return PruneResult(
            cutoff_poll_id=cutoff,
            polls_deleted=polls_deleted,
            versions_deleted=versions_deleted,
            events_deleted=events_deleted,
        )

    # -- where history starts -----------------------------------------------------------------

    def describe(self) -> str:
        """The database as messages name it: its URL with the password hidden."""
        return describe_database(self._engine)

    async def first_poll(self) -> queries.PollMark | None:
        """The first poll that observed anything (see ``queries.first_observing_poll``), or
        None when no poll did: the readers' answers mean nothing before it."""
        try:
            async with self._engine.connect() as conn:
                return await queries.first_observing_poll(conn)
        except DATABASE_ERRORS as exc:
            raise StoreError(f"could not read the first poll: {_describe(exc)}") from exc

    async def poll_count(self) -> int:
        """How many polls are recorded, whatever their outcome."""
        try:
            async with self._engine.connect() as conn:
                return int(await conn.scalar(select(func.count()).select_from(Poll)) or 0)
        except DATABASE_ERRORS as exc:
            raise StoreError(f"could not count polls: {_describe(exc)}") from exc


# -- helpers ----------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    return f"{type(original or exc).__name__}: {str(original or exc).splitlines()[0][:300]}"


def _errors(result: PollResult) -> str | None:
    failures = result.failures
    if not failures:
        return None
    return "\n".join(f.error or "failed" for f in failures)[:2000]


BatchSignature = tuple[Any, ...]
"""What a batch observed, as far as comparing two polls goes (``_signature``)."""


def _signature(batch: BatchOutcome) -> BatchSignature:
    """The request and its outcome, and what identifies the positions it observed: its
    answer's digest, or none at all when it failed or observed nothing."""
    observed: object = "nothing" if not batch.positions else batch.answer_digest
    return (
        batch.chain_id,
        batch.spender,
        batch.wallets,
        batch.kind,
        batch.source,
        batch.tokens,
        batch.except_tokens,
        batch.ok,
        observed,
    )


def _repeats(batches: Sequence[BatchOutcome], previous: Sequence[BatchSignature] | None) -> bool:
    """Whether ``batches`` observe exactly what the poll of ``previous`` did: the same requests
    with the same outcomes, each answered with the same bytes (the same digest) or with no
    position at all. Over the snapshot that poll made, they cannot change anything."""
    if previous is None or len(batches) != len(previous):
        return False
    for batch, before in zip(batches, previous, strict=True):
        signature = _signature(batch)
        if signature[-1] is None or signature != before:
            return False  # an answer without a digest is never taken for a repeat
    return True


def _changes(
    previous: Snapshot | None,
    positions: Iterable[Position],
    coverages: Iterable[Coverage],
    threshold: int,
) -> tuple[Snapshot, tuple[ChangeEvent, ...]]:
    """The snapshot after a poll and its events; with no ``previous`` state (the baseline),
    the snapshot alone, as its every value is a first observation."""
    if previous is None:
        return observe(EMPTY_SNAPSHOT, positions, coverages), ()
    return observe_changes(previous, positions, coverages, threshold=threshold)


def _event_key(event: ChangeEvent) -> tuple[int, str, str, str | None]:
    return (event.chain_id, event.wallet, event.token, event.spender)


EVENT_COLUMNS = (
    "poll_id",
    "observed_at",
    "chain_id",
    "wallet",
    "token",
    "spender",
    "change",
    "old",
    "new",
)


def _event_row(event: ChangeEvent, poll_id: int, observed_at: datetime) -> tuple[Any, ...]:
    """A change event's row, in ``EVENT_COLUMNS`` order."""
    return (
        poll_id,
        observed_at,
        event.chain_id,
        event.wallet,
        event.token,
        event.spender,
        event.change.value,
        event.old,
        event.new,
    )


async def _insert_scopes(conn: AsyncConnection, poll_id: int, result: PollResult) -> None:
    scopes: dict[tuple[int, str], dict[str, Any]] = {}
    for batch in result.batches:
        scope = scopes.setdefault(
            (batch.chain_id, batch.spender),
            {
                "poll_id": poll_id,
                "chain_id": batch.chain_id,
                "spender": batch.spender,
                "batches": 0,
                "batches_failed": 0,
                "positions": 0,
                "request_ids": [],
                "errors": [],
            },
        )
        scope["batches"] += 1
        scope["positions"] += len(batch.positions)
        scope["request_ids"].append(batch.request_id or "-")
        if not batch.ok:
            scope["batches_failed"] += 1
            scope["errors"].append(batch.error or "failed")
    if scopes:
        await conn.execute(
            insert(PollScope),
            [
                {
                    **s,
                    "request_ids": " ".join(s["request_ids"]),
                    "errors": "\n".join(s["errors"])[:2000] or None,
                }
                for s in scopes.values()
            ],
        )


_VERSIONED: tuple[tuple[type[AllowanceVersion] | type[BalanceVersion], tuple[str, ...]], ...] = (
    (AllowanceVersion, ("chain_id", "wallet", "token", "spender")),
    (BalanceVersion, ("chain_id", "wallet", "token")),
)


def _prunable_versions(
    table: type[AllowanceVersion] | type[BalanceVersion],
    key_columns: Sequence[str],
    cutoff: int,
) -> ColumnElement[bool]:
    """The versions a prune at ``cutoff`` deletes: older ones superseded by a version at or
    before the cutoff, and zeros up to the cutoff (absent means zero; every older version
    of the key goes, so a zero left there would be the key's first version)."""
    newer = aliased(table)
    same_key = and_(*(getattr(newer, c) == getattr(table, c) for c in key_columns))
    superseded = (
        exists()
        .where(same_key, newer.poll_id > table.poll_id, newer.poll_id <= cutoff)
        .correlate(table)
    )
    return or_(
        and_(table.poll_id < cutoff, superseded),
        and_(table.poll_id <= cutoff, table.amount == 0),
    )


async def _prune_versions(
    conn: AsyncConnection,
    table: type[AllowanceVersion] | type[BalanceVersion],
    key_columns: Sequence[str],
    cutoff: int,
) -> int:
    deleted = (
        await conn.execute(delete(table).where(_prunable_versions(table, key_columns, cutoff)))
    ).rowcount
    await conn.execute(update(table).where(table.poll_id < cutoff).values(poll_id=cutoff))
    return int(deleted)


def _prunable_events(cutoff: int) -> ColumnElement[bool]:
    """The events a prune at ``cutoff`` deletes: those of the polls it deletes, and the
    cutoff's own, as the cutoff becomes the baseline: its values (every key's value at the
    cutoff) are its events from then on (``queries.first_observations``), and an event stored
    beside them would tell of a change from a value no longer kept."""
    return ChangeEventRow.poll_id <= cutoff


async def _count_prunable(conn: AsyncConnection, cutoff: int) -> PruneResult:
    """What a prune at ``cutoff`` would delete, counted with the prune's own selection."""

    async def count(table: type[Any], condition: ColumnElement[bool]) -> int:
        return int(await conn.scalar(select(func.count()).select_from(table).where(condition)) or 0)

    versions = 0
    for table, key_columns in _VERSIONED:
        versions += await count(table, _prunable_versions(table, key_columns, cutoff))
    return PruneResult(
        cutoff_poll_id=cutoff,
        polls_deleted=await count(Poll, Poll.id < cutoff),
        versions_deleted=versions,
        events_deleted=await count(ChangeEventRow, _prunable_events(cutoff)),
    )


def snapshot_positions(
    stored: StoredSnapshot,
) -> Iterable[tuple[Token, int, str, str | None, int, int]]:
    """Rows for output: (token, chain_id, wallet, spender, balance, allowance). One row per
    allowance, and one with ``spender`` None for each balance that no allowance row shows."""
    snapshot = stored.snapshot
    shown: set[BalanceKey] = set()
    for (chain_id, wallet, token, spender), allowance in sorted(snapshot.allowances.items()):
        bkey = (chain_id, wallet, token)
        shown.add(bkey)
        yield (
            _lookup(stored, chain_id, token),
            chain_id,
            wallet,
            spender,
            snapshot.balance(bkey),
            allowance,
        )
    for (chain_id, wallet, token), balance in sorted(snapshot.balances.items()):
        if (chain_id, wallet, token) not in shown:
            yield _lookup(stored, chain_id, token), chain_id, wallet, None, balance, 0


def _lookup(stored: StoredSnapshot, chain_id: int, token: str) -> Token:
    return stored.tokens.get(
        (chain_id, token),
        Token(chain_id=chain_id, address=token, symbol="", name="", decimals=None),
    )
