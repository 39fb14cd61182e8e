"""Findings with a lifecycle: opened when a rule first fires, resolved when it stops.

Suppressed findings are stored like the others (with ``suppressed`` set): suppression hides
a finding from metrics and alerts, never from the database.

A sync writes only what changed. The open findings are indexed in memory between syncs
(``FindingsLedger``), so that a sync compares the new evaluation with the index instead of
reading every open finding back from the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from monitor.domain.records import FindingChanges
from monitor.errors import StoreError
from monitor.risk.rules import Finding
from monitor.store.schema import FindingRow

GroupKey = tuple[str, int, str, str]
"""(rule, chain_id, spender, token or ""): the open findings of one rule, spender and token,
which the index holds by wallet. A stored row's key is its group key and wallet; a finding's
own key is ``monitor.risk.model.FindingKey`` (token None for none)."""

OpenFinding = int
"""An open finding as stored, packed into one int (``open_finding``): its row id, and what a
sync compares of it (severity, suppression, and a hash of the detail). One int instead of a
tuple of four and the row id: at 266,000 open findings, 104 -> 40 bytes each, 16 MiB."""

_ROW_ID_SHIFT = 72
_STATE_MASK = (1 << _ROW_ID_SHIFT) - 1
_HASH_MASK = (1 << 64) - 1
_SEVERITY_CODES: dict[str, int] = {}
"""A small code per severity seen (process-wide: the index lives in this process only)."""


def open_finding(row_id: int, severity: str, detail: str, suppressed: bool) -> OpenFinding:
    return (row_id << _ROW_ID_SHIFT) | _state(severity, detail, suppressed)


def row_id_of(stored: OpenFinding) -> int:
    return stored >> _ROW_ID_SHIFT


def _state(severity: str, detail: str, suppressed: bool) -> int:
    """Severity and suppression exactly; the detail by its 64-bit hash (SipHash, keyed per
    process), so that the index holds no detail string. A changed detail whose hash is the
    old one's would go unwritten: a chance of 2^-64 per change, and only the stored detail
    text would lag (severity, suppression and the finding itself are compared exactly)."""
    code = _SEVERITY_CODES.get(severity)
    if code is None:
        code = _SEVERITY_CODES.setdefault(severity, len(_SEVERITY_CODES))
    return ((hash(detail) & _HASH_MASK) << 8) | (code << 1) | bool(suppressed)


Marker = tuple[int, int]
"""(highest finding id, number of open findings): moves whenever a finding is opened or
resolved, by this process or another."""

WRITE_CHUNK = 5_000
"""Rows per statement: each chunk is one await, so that binding the parameters of a large
sync does not hold the event loop for long."""

COMPARE_IN_THREAD = 10_000
"""From this many findings (found plus open) the comparison runs off the event loop."""

LOAD_CHUNK_ROWS = 5_000
"""Open findings fetched at a time when the index is loaded: each chunk is one await."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredFinding:
    rule: str
    severity: str
    chain_id: int
    wallet: str
    spender: str
    token: str | None
    detail: str
    suppressed: bool
    opened_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingPlan:
    """The writes that bring the open findings in line with an evaluation."""

    opened: list[Finding]
    updated: list[tuple[int, Finding]]
    """(row id, finding with the new severity, detail and suppression)."""
    resolved: list[tuple[GroupKey, str, int]]
    """(group key, wallet, row id)."""


@dataclass(slots=True, kw_only=True)
class OpenFindings:
    """The open findings of the database as of ``marker``, by group key and wallet.

    Nested rather than keyed by 5-tuples: at 266,000 open findings a key tuple per finding held
    21 MiB for the daemon's life. Should the database hold two open rows for one key (syncs
    that took no lock could write them, racing each other), the newest is tracked and the
    other left alone.
    """

    groups: dict[GroupKey, dict[str, OpenFinding]]
    marker: Marker
    synced: tuple[Finding, ...] | None = None
    """The findings (that very tuple) the rows were last brought in line with: handed the
    same tuple again, with the marker unchanged, there is nothing to compare."""

    def __len__(self) -> int:
        return sum(map(len, self.groups.values()))

    def apply(self, plan: FindingPlan, new_ids: Sequence[int]) -> None:
        """Take in ``plan`` once it is committed; ``new_ids`` are its opened rows' ids, in
        the order of ``plan.opened``."""
        groups = self.groups
        for group_key, wallet, _ in plan.resolved:
            rows = groups[group_key]
            del rows[wallet]
            if not rows:
                del groups[group_key]
        for row_id, f in plan.updated:
            groups[group_of(f)][f.wallet] = open_finding(row_id, f.severity, f.detail, f.suppressed)
        for f, row_id in zip(plan.opened, new_ids, strict=True):
            group_key = group_of(f)
            group = groups.get(group_key)
            if group is None:
                group = groups[group_key] = {}
            group[f.wallet] = open_finding(row_id, f.severity, f.detail, f.suppressed)
        highest, open_count = self.marker
        self.marker = (
            max(highest, max(new_ids, default=0)),
            open_count + len(plan.opened) - len(plan.resolved),
        )


def group_of(f: Finding) -> GroupKey:
    """The group key of ``f``'s row."""
    return (f.rule, f.chain_id, f.spender, f.token or "")


def plan_sync(
    open_groups: Mapping[GroupKey, Mapping[str, OpenFinding]], found: Iterable[Finding]
) -> FindingPlan:
    """What to write so that the open findings are exactly ``found`` (the last of several
    findings with one key wins)."""
    # One pass over every finding is unavoidable; it allocates as little as it can (no tuple
    # per finding outlives it), because on a large heap each allocation brings the next
    # garbage collection closer, and what a sync leaves behind is resident at the poll's peak.
    current: dict[GroupKey, dict[str, Finding]] = {}
    group_key: GroupKey
    for f in found:
        group_key = (f.rule, f.chain_id, f.spender, f.token or "")
        bucket = current.get(group_key)
        if bucket is None:
            bucket = current[group_key] = {}
        bucket[f.wallet] = f
    opened: list[Finding] = []
    updated: list[tuple[int, Finding]] = []
    codes, state_mask, hash_mask, shift = _SEVERITY_CODES, _STATE_MASK, _HASH_MASK, _ROW_ID_SHIFT
    for group_key, bucket in current.items():
        rows = open_groups.get(group_key)
        if rows is None:
            opened.extend(bucket.values())
            continue
        row_of = rows.get
        for wallet, f in bucket.items():
            row = row_of(wallet)
            if row is None:
                opened.append(f)
                continue
            # ``_state``, inlined: this runs for every finding at every changed evaluation. A
            # severity never seen cannot be the stored one.
            code = codes.get(f.severity)
            state = ((hash(f.detail) & hash_mask) << 8) | (code << 1) if code is not None else -1
            if row & state_mask != state | bool(f.suppressed):
                updated.append((row >> shift, f))
    resolved: list[tuple[GroupKey, str, int]] = []
    for group_key, open_rows in open_groups.items():
        bucket = current.get(group_key)
        gone = open_rows.keys() if bucket is None else open_rows.keys() - bucket.keys()
        resolved.extend((group_key, wallet, row_id_of(open_rows[wallet])) for wallet in gone)
    resolved.sort(key=lambda item: item[2])
    return FindingPlan(opened=opened, updated=updated, resolved=resolved)


async def read_marker(conn: AsyncConnection) -> Marker:
    highest = select(func.max(FindingRow.id)).scalar_subquery()
    open_count = (
        select(func.count()).select_from(FindingRow).where(FindingRow.resolved_at.is_(None))
    ).scalar_subquery()
    row = (await conn.execute(select(highest, open_count))).one()
    return (int(row[0] or 0), int(row[1]))


async def load_open_findings(conn: AsyncConnection, marker: Marker) -> OpenFindings:
    """Every open finding (only the columns a sync compares: no timestamps to convert), as of
    ``marker``, read just before on ``conn``."""
    # Streamed in chunks: one fetch of hundreds of thousands of rows runs in the driver's
    # thread, taking the GIL back for every row, and the event loop (and /metrics) could not
    # get it for half a second.
    result = await conn.stream(
        select(
            FindingRow.rule,
            FindingRow.chain_id,
            FindingRow.wallet,
            FindingRow.spender,
            FindingRow.token,
            FindingRow.id,
            FindingRow.severity,
            FindingRow.detail,
            FindingRow.suppressed,
        )
        .where(FindingRow.resolved_at.is_(None))
        .order_by(FindingRow.id)
    )
    # The index lives as long as the process and keeps, of each row's strings, only the wallet:
    # one object per distinct wallet (they repeat across findings) instead of one per row.
    shared: dict[str, str] = {}
    same = shared.setdefault
    groups: dict[GroupKey, dict[str, OpenFinding]] = {}
    async for chunk in result.partitions(LOAD_CHUNK_ROWS):
        for rule, chain_id, wallet, spender, token, row_id, severity, detail, suppressed in chunk:
            group_key = (rule, chain_id, spender, token or "")
            rows = groups.get(group_key)
            if rows is None:
                rows = groups[group_key] = {}
            rows[same(wallet, wallet)] = open_finding(row_id, severity, detail, suppressed)
    return OpenFindings(groups=groups, marker=marker)


async def write_plan(conn: AsyncConnection, plan: FindingPlan, *, now: datetime) -> list[int]:
    """Execute ``plan`` on ``conn``: one statement per chunk of rows. Returns the ids of the
    opened rows, in the order of ``plan.opened``."""
    by_id = FindingRow.id == bindparam("row_id")
    await _execute_chunked(
        conn,
        update(FindingRow).where(by_id).values(resolved_at=now),
        [{"row_id": row_id} for _, _, row_id in plan.resolved],
    )
    await _execute_chunked(
        conn,
        update(FindingRow).where(by_id),
        [
            {
                "row_id": row_id,
                "severity": f.severity,
                "detail": f.detail,
                "suppressed": f.suppressed,
            }
            for row_id, f in plan.updated
        ],
    )
    # Each new row's id comes back with its key: SQLite cannot keep RETURNING in parameter
    # order without inserting row by row. The parameters are built a chunk at a time, and
    # only the ids are kept, in the plan's order: the strings each returned row brings are
    # dropped with its chunk (at 266,000 opened findings, the parameters of every row built
    # at once and the returned keys kept to the end held about 190 MiB at the peak).
    opening = insert(FindingRow).returning(
        FindingRow.rule,
        FindingRow.chain_id,
        FindingRow.wallet,
        FindingRow.spender,
        FindingRow.token,
        FindingRow.id,
    )
    new_ids: list[int] = []
    opened = plan.opened
    for start in range(0, len(opened), WRITE_CHUNK):
        chunk = opened[start : start + WRITE_CHUNK]
        rows = [
            {
                "rule": f.rule,
                "severity": f.severity,
                "chain_id": f.chain_id,
                "wallet": f.wallet,
                "spender": f.spender,
                "token": f.token or "",
                "detail": f.detail,
                "suppressed": f.suppressed,
                "opened_at": now,
            }
            for f in chunk
        ]
        result = await conn.execute(opening, rows)
        returned = {
            (rule, chain_id, wallet, spender, token): row_id
            for rule, chain_id, wallet, spender, token, row_id in result
        }
        for f in chunk:
            row_id = returned.get((f.rule, f.chain_id, f.wallet, f.spender, f.token or ""))
            if row_id is None:
                raise StoreError(
                    f"inserted {len(chunk)} findings but no id came back for one of them"
                )
            new_ids.append(row_id)
    return new_ids


async def _execute_chunked(
    conn: AsyncConnection, statement: Any, rows: Sequence[dict[str, Any]]
) -> None:
    for start in range(0, len(rows), WRITE_CHUNK):
        await conn.execute(statement, list(rows[start : start + WRITE_CHUNK]))


class FindingsLedger:
    """The stored findings of one writer, with an index of the open ones kept between syncs.

    The index is read on first use and trusted while nothing else moved: each sync checks,
    in its transaction and under ``lock``, that the highest finding id and the number of open
    findings are what the index expects, and reads the index again if not (another writer
    opened or resolved findings). A writer that only changed the severity, detail or
    suppression of open findings moves neither: ``invalidate`` is for whoever learns of such
    a writer by other means (the snapshot store does when another process recorded a poll).
    The index is dropped when a sync fails and replaced only once a sync has committed.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        lock: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._lock = lock
        self._open: OpenFindings | None = None
        self._generation = 0
        """Counts syncs and invalidations: a sync keeps its index only if none came between."""

    def invalidate(self) -> None:
        """Read the open findings from the database again at the next sync."""
        self._open = None
        self._generation += 1

    async def sync(self, findings: Iterable[Finding], *, now: datetime) -> FindingChanges:
        """Open new findings, resolve vanished ones, update changed ones, in one transaction."""
        found = tuple(findings)
        index = self._open
        self.invalidate()  # until this transaction commits, nothing is known for sure
        generation = self._generation
        try:
            async with self._engine.begin() as conn:
                if self._lock is not None:
                    await self._lock(conn)
                marker = await read_marker(conn)
                if index is None or index.marker != marker:
                    index = await load_open_findings(conn, marker)
                if found is index.synced:
                    # An evaluation that changed nothing hands back its previous tuple.
                    plan = FindingPlan(opened=[], updated=[], resolved=[])
                elif len(found) + len(index) >= COMPARE_IN_THREAD:
                    plan = await asyncio.to_thread(plan_sync, index.groups, found)
                else:
                    plan = plan_sync(index.groups, found)
                new_ids = await write_plan(conn, plan, now=now)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"could not record findings: {type(exc).__name__}") from exc
        index.apply(plan, new_ids)
        index.synced = found
        if generation == self._generation:
            self._open = index
        return FindingChanges(
            opened=len(plan.opened), resolved=len(plan.resolved), updated=len(plan.updated)
        )


async def list_findings(
    engine: AsyncEngine, *, include_resolved: bool = False
) -> list[StoredFinding]:
    """Open findings (and resolved ones when asked), oldest first."""
    query = select(FindingRow).order_by(FindingRow.opened_at, FindingRow.id)
    if not include_resolved:
        query = query.where(FindingRow.resolved_at.is_(None))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"could not read findings: {type(exc).__name__}") from exc
    return [
        StoredFinding(
            rule=r.rule,
            severity=r.severity,
            chain_id=r.chain_id,
            wallet=r.wallet,
            spender=r.spender,
            token=r.token or None,
            detail=r.detail,
            suppressed=r.suppressed,
            opened_at=r.opened_at,
            resolved_at=r.resolved_at,
        )
        for r in rows
    ]
