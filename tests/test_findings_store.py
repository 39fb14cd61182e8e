"""Stored findings across syncs, on SQLite and PostgreSQL: only differences are written, and
the in-memory index of open findings never drifts from the database.

Expected behaviour with several writers on one database: a writer notices another writer's
opened or resolved findings at its next sync (the highest finding id or the number of open
findings moved), and any change at all once the other writer recorded a poll (its own next
poll sees the head move). Only a writer that re-rates open findings without polling goes
unnoticed until then; the next sync still writes every difference from its own index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.config.model import DEFAULT_UNLIMITED_THRESHOLD as T
from monitor.domain.records import FindingChanges
from monitor.errors import StoreError
from monitor.risk.model import Finding, RuleName, Severity
from monitor.store import findings as findings_module
from monitor.store.schema import FindingRow
from monitor.store.snapshots import SqlSnapshotStore
from tests.store_helpers import S1, S2, T0, TK1, TK2, W1, W2, batch, poll, pos

TK3 = "0x" + "03" * 20


def finding(
    token: str | None = TK1,
    *,
    wallet: str = W1,
    spender: str = S1,
    severity: Severity = Severity.WARNING,
    detail: str = "unlimited",
    suppressed: bool = False,
) -> Finding:
    return Finding(
        rule=RuleName.VALUE_AT_RISK if token is None else RuleName.UNLIMITED_APPROVAL,
        severity=severity,
        chain_id=1,
        wallet=wallet,
        spender=spender,
        token=token,
        detail=detail,
        suppressed=suppressed,
    )


def changes(opened: int = 0, updated: int = 0, resolved: int = 0) -> FindingChanges:
    return FindingChanges(opened=opened, updated=updated, resolved=resolved)


async def stored_rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """Every finding row: (id, token, wallet, severity, detail, suppressed, opened, resolved)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                FindingRow.id,
                FindingRow.token,
                FindingRow.wallet,
                FindingRow.severity,
                FindingRow.detail,
                FindingRow.suppressed,
                FindingRow.opened_at,
                FindingRow.resolved_at,
            ).order_by(FindingRow.id)
        )
        return [tuple(r) for r in rows]


async def open_state(store: SqlSnapshotStore) -> set[tuple[str, str, str, str, bool]]:
    return {
        (f.wallet, f.token or "", f.severity, f.detail, f.suppressed)
        for f in await store.findings()
    }


def expected_state(found: list[Finding]) -> set[tuple[str, str, str, str, bool]]:
    return {(f.wallet, f.token or "", f.severity, f.detail, f.suppressed) for f in found}


async def test_findings_follow_several_syncs(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    t1, t2, t3, t4 = (T0 + timedelta(minutes=m) for m in range(1, 5))
    first = [finding(TK1), finding(TK2), finding(None, detail="$10")]
    assert await store.sync_findings(first, now=t1) == changes(opened=3)
    assert await store.sync_findings(first, now=t2) == changes()
    second = [finding(TK1, severity=Severity.CRITICAL), finding(None, detail="$20"), finding(TK3)]
    assert await store.sync_findings(second, now=t3) == changes(opened=1, updated=2, resolved=1)
    assert await open_state(store) == expected_state(second)
    # A finding that comes back after being resolved is a new one, opened anew.
    third = [*second, finding(TK2)]
    assert await store.sync_findings(third, now=t4) == changes(opened=1)
    assert await open_state(store) == expected_state(third)
    rows = await stored_rows(migrated_engine)
    assert [(r[1], r[6], r[7]) for r in rows if r[1] == TK2] == [(TK2, t1, t3), (TK2, t4, None)]
    # A writer that reads everything from the database agrees there is nothing left to do.
    assert (
        await SqlSnapshotStore(migrated_engine, unlimited_threshold=T).sync_findings(third, now=t4)
        == changes()
    )


async def test_large_syncs_are_written_in_chunks_with_the_right_ids(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(findings_module, "WRITE_CHUNK", 3)
    monkeypatch.setattr(findings_module, "COMPARE_IN_THREAD", 4)
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    tokens = ["0x" + f"{i:040x}" for i in range(1, 12)]
    found = [finding(t, detail=f"d{t}") for t in tokens]
    assert await store.sync_findings(found, now=T0) == changes(opened=11)
    # Every row id the index took from RETURNING must be its own row's: update and resolve
    # through those ids, then check each row by its key.
    rerated = [finding(t, detail=f"d{t}", suppressed=True) for t in tokens[:7]]
    assert await store.sync_findings(rerated, now=T0 + timedelta(minutes=1)) == changes(
        updated=7, resolved=4
    )
    rows = await stored_rows(migrated_engine)
    assert [(r[1], r[4], r[5], r[7] is None) for r in rows] == [
        (t, f"d{t}", i < 7, i < 7) for i, t in enumerate(tokens)
    ]


async def test_opened_ids_come_back_in_the_plans_order_each_its_own_rows(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows RETURNING gives back bring new strings for every key, in an order SQLite does
    not promise: only the ids are kept, one int per opened finding in the plan's order, so
    that those strings go with their chunk."""
    monkeypatch.setattr(findings_module, "WRITE_CHUNK", 2)
    found = [finding(t) for t in (TK1, TK2, TK3, None)]
    plan = findings_module.plan_sync({}, found)
    async with migrated_engine.begin() as conn:
        new_ids = await findings_module.write_plan(conn, plan, now=T0)
    assert all(type(row_id) is int for row_id in new_ids)
    stored = {token: row_id for row_id, token, *_ in await stored_rows(migrated_engine)}
    assert len(stored) == 4
    assert [stored[f.token or ""] for f in plan.opened] == new_ids


def test_a_sync_compares_severity_detail_and_suppression_each_on_its_own() -> None:
    """The index packs each open row into one int: every field a sync compares must still
    tell a change, alone, and the row id must come back whole however large."""
    base = [finding(t) for t in (TK1, TK2, TK3, None)]
    big = (1 << 62) + 12345
    groups: dict[Any, dict[str, int]] = {}
    for row_id, f in enumerate(base, start=big):
        groups.setdefault(findings_module.group_of(f), {})[f.wallet] = findings_module.open_finding(
            row_id, f.severity, f.detail, f.suppressed
        )
    assert findings_module.plan_sync(groups, base) == findings_module.FindingPlan(
        opened=[], updated=[], resolved=[]
    )
    changed = [
        finding(TK1, severity=Severity.CRITICAL),
        finding(TK2, detail="unlimited, now 5 USDC"),
        finding(TK3, suppressed=True),
        base[3],
    ]
    plan = findings_module.plan_sync(groups, changed)
    assert plan.updated == [(big, changed[0]), (big + 1, changed[1]), (big + 2, changed[2])]
    assert plan.opened == [] and plan.resolved == []
    # A row stored with a severity this process never made is not any severity it makes.
    groups[findings_module.group_of(base[0])][W1] = findings_module.open_finding(
        big, "fatal", base[0].detail, False
    )
    assert findings_module.plan_sync(groups, base).updated == [(big, base[0])]
    gone = findings_module.plan_sync(groups, base[1:])
    assert [(row_id, wallet) for _, wallet, row_id in gone.resolved] == [(big, W1)]


async def test_a_failed_sync_writes_nothing_and_the_next_one_catches_up(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    assert await store.sync_findings([finding(TK1), finding(TK2)], now=T0) == changes(opened=2)
    before = await stored_rows(migrated_engine)
    # A resolve and an update go in before the row that cannot be stored (no wallet) fails.
    unstorable = finding(TK3, wallet=None)  # type: ignore[arg-type]
    wanted = [finding(TK2, suppressed=True), finding(TK3)]
    with pytest.raises(StoreError, match="could not record findings"):
        await store.sync_findings([*wanted, unstorable], now=T0 + timedelta(minutes=1))
    assert await stored_rows(migrated_engine) == before
    # Had the index taken in the failed sync's changes, this one would write nothing.
    later = T0 + timedelta(minutes=2)
    assert await store.sync_findings(wanted, now=later) == changes(opened=1, updated=1, resolved=1)
    assert await open_state(store) == expected_state(wanted)
    everything = await store.findings(include_resolved=True)
    assert [(f.token, f.resolved_at) for f in everything if f.token == TK1] == [(TK1, later)]


async def test_a_failed_update_is_written_by_the_next_sync(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.sync_findings([finding(TK1), finding(TK2)], now=T0)

    def refuse_updates(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE FINDINGS"):
            raise ConnectionResetError("connection lost")

    # Only an update: neither the highest id nor the open count would tell a stale index.
    rerated = [finding(TK1, suppressed=True), finding(TK2)]
    event.listen(migrated_engine.sync_engine, "before_cursor_execute", refuse_updates)
    try:
        with pytest.raises(StoreError, match="could not record findings"):
            await store.sync_findings(rerated, now=T0 + timedelta(minutes=1))
    finally:
        event.remove(migrated_engine.sync_engine, "before_cursor_execute", refuse_updates)
    assert await open_state(store) == expected_state([finding(TK1), finding(TK2)])
    assert await store.sync_findings(rerated, now=T0 + timedelta(minutes=2)) == changes(updated=1)
    assert await open_state(store) == expected_state(rerated)


async def test_the_open_findings_are_read_back_in_chunks_and_all_of_them(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(findings_module, "LOAD_CHUNK_ROWS", 2)
    tokens = ["0x" + f"{i:040x}" for i in range(1, 8)]
    writer = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    assert await writer.sync_findings([finding(t) for t in tokens], now=T0) == changes(opened=7)
    # A new process reads the seven open rows back (four chunks): every one of them must be
    # known, or it would open a duplicate, or fail to resolve what vanished.
    restarted = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    again = [finding(t) for t in tokens[1:]] + [finding(tokens[0], detail="rerated")]
    assert await restarted.sync_findings(
        again[:-2] + again[-1:], now=T0 + timedelta(minutes=1)
    ) == changes(updated=1, resolved=1)
    rows = await stored_rows(migrated_engine)
    assert len(rows) == 7
    assert [(r[1], r[7] is None) for r in rows] == [(t, t != tokens[6]) for t in tokens]


async def test_findings_opened_and_resolved_by_another_writer_are_noticed(
    migrated_engine: AsyncEngine,
) -> None:
    first, second = (
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
    )
    assert await first.sync_findings([finding(TK1), finding(TK2)], now=T0) == changes(opened=2)
    resolved_at = T0 + timedelta(minutes=1)
    assert await second.sync_findings([finding(TK2), finding(TK3)], now=resolved_at) == changes(
        opened=1, resolved=1
    )
    # The first writer's index still holds TK1 open and no TK3: it must read them again
    # instead of resolving TK1 a second time and opening a duplicate TK3.
    assert (
        await first.sync_findings([finding(TK2), finding(TK3)], now=T0 + timedelta(minutes=2))
        == changes()
    )
    rows = await stored_rows(migrated_engine)
    assert [(r[1], r[7]) for r in rows] == [(TK1, resolved_at), (TK2, None), (TK3, None)]


async def test_findings_rerated_by_another_writer_after_its_poll_are_noticed(
    migrated_engine: AsyncEngine,
) -> None:
    first, second = (
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
    )
    positions = [pos(W1, TK1, S1, 5, 10)]
    await first.record_poll(poll(1, batch(S1, (W1,), positions)))
    assert await first.sync_findings([finding(TK1)], now=T0) == changes(opened=1)
    await second.record_poll(poll(2, batch(S1, (W1,), positions)))
    assert await second.sync_findings([finding(TK1, suppressed=True)], now=T0) == changes(updated=1)
    # Neither the highest id nor the open count moved; the poll head did.
    await first.record_poll(poll(3, batch(S1, (W1,), positions)))
    assert await first.sync_findings([finding(TK1)], now=T0) == changes(updated=1)
    assert await open_state(first) == expected_state([finding(TK1)])


async def test_syncs_read_the_open_findings_only_when_needed(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    with count_statements(migrated_engine) as statements:
        await store.sync_findings([finding(TK1), finding(TK2)], now=T0)
        await store.sync_findings([finding(TK1)], now=T0 + timedelta(minutes=1))
        await store.sync_findings([finding(TK1), finding(TK3)], now=T0 + timedelta(minutes=2))
    full_reads = [s for s in statements if s.startswith("SELECT") and "FINDINGS.DETAIL" in s]
    assert len(full_reads) == 1  # the first sync's; the later ones trust the index
    updates = [s for s in statements if s.startswith("UPDATE")]
    assert len(updates) == 1  # one statement for the resolved row, none for unchanged rows


async def test_the_same_evaluation_handed_again_is_not_compared(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged evaluation hands back its previous tuple: nothing to compare, unless
    another writer changed the findings meanwhile."""
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    found = (finding(TK1), finding(TK2))
    assert await store.sync_findings(found, now=T0) == changes(opened=2)
    compared: list[int] = []
    real_plan_sync = findings_module.plan_sync

    def spy(*args: Any) -> Any:
        compared.append(1)
        return real_plan_sync(*args)

    monkeypatch.setattr(findings_module, "plan_sync", spy)
    assert await store.sync_findings(found, now=T0) == changes()
    assert compared == []
    equal = (*found,)  # equal, not the same: compared
    assert await store.sync_findings(equal, now=T0) == changes()
    assert compared == [1]
    # Another writer resolves TK2: the same tuple again is compared, and TK2 opened anew.
    other = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    assert await other.sync_findings((finding(TK1),), now=T0) == changes(resolved=1)
    assert await store.sync_findings(equal, now=T0) == changes(opened=1)
    assert await open_state(store) == expected_state(list(found))


@contextlib.contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements executed on ``engine`` meanwhile (upper-cased, stripped)."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.strip().upper())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


# -- any sequence of evaluations: the open findings are the last one, the counts are right ----

evaluations = st.lists(
    st.lists(
        st.builds(
            finding,
            st.sampled_from([TK1, TK2, TK3, None]),
            wallet=st.sampled_from([W1, W2]),
            spender=st.sampled_from([S1, S2]),
            severity=st.sampled_from(list(Severity)),
            detail=st.sampled_from(["a", "b"]),
            suppressed=st.booleans(),
        ),
        max_size=8,
    ),
    min_size=1,
    max_size=5,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=evaluations)
async def test_any_sequence_of_syncs_leaves_exactly_the_last_evaluation_open(
    migrated_engine: AsyncEngine, sequence: list[list[Finding]]
) -> None:
    async with migrated_engine.begin() as conn:
        await conn.execute(delete(FindingRow))
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    model: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for minute, found in enumerate(sequence):
        current = {f.key: (f.severity, f.detail, f.suppressed) for f in found}
        expected = changes(
            opened=len(current.keys() - model.keys()),
            updated=sum(1 for k, v in current.items() if k in model and model[k] != v),
            resolved=len(model.keys() - current.keys()),
        )
        assert await store.sync_findings(found, now=T0 + timedelta(minutes=minute)) == expected
        model = current
        assert await open_state(store) == expected_state(list({f.key: f for f in found}.values()))
