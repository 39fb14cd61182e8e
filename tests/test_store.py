"""The snapshot store contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.config.model import DEFAULT_UNLIMITED_THRESHOLD as T
from monitor.domain import snapshot as snapshot_module
from monitor.domain.model import UINT256_MAX, BatchOutcome
from monitor.domain.snapshot import (
    EMPTY_SNAPSHOT,
    Change,
    Snapshot,
    apply_events,
    diff_snapshots,
)
from monitor.errors import StoreError
from monitor.store import migrate, snapshots
from monitor.store.engine import create_engine
from monitor.store.invariants import store_invariants
from monitor.store.schema import AllowanceVersion, BalanceVersion, ChangeEventRow, Poll, PollScope
from monitor.store.snapshots import POLL_LOCK_KEY, SqlSnapshotStore
from tests.databases import postgres_database
from tests.store_helpers import S1, S2, T0, TK1, TK2, W1, W2, batch, clear, count, poll, pos


async def test_uint256_max_round_trips_exactly(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_poll(
        poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, UINT256_MAX - 1, UINT256_MAX)]))
    )
    stored = await SqlSnapshotStore(migrated_engine, unlimited_threshold=T).snapshot_at(
        T0 + timedelta(minutes=1)
    )
    assert stored.snapshot.allowances[(1, W1, TK1, S1)] == UINT256_MAX
    assert stored.snapshot.balances[(1, W1, TK1)] == UINT256_MAX - 1
    assert stored.tokens[(1, TK1)].decimals == 18


async def test_an_unchanged_poll_adds_no_position_rows(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    positions = [pos(W1, TK1, S1, 5, UINT256_MAX), pos(W2, TK2, S1, 7, 0)]
    first = await store.record_poll(poll(1, batch(S1, (W1, W2), positions)))
    assert first.versions_written == 3
    versions = await count(migrated_engine, AllowanceVersion) + await count(
        migrated_engine, BalanceVersion
    )
    for minute in range(2, 6):
        again = await store.record_poll(poll(minute, batch(S1, (W1, W2), positions)))
        assert again.events == ()
        assert again.versions_written == 0
    assert (
        await count(migrated_engine, AllowanceVersion)
        + await count(migrated_engine, BalanceVersion)
        == versions
    )
    assert await count(migrated_engine, Poll) == 5
    assert await count(migrated_engine, PollScope) == 5
    # The baseline is stored once, as values: its first observations are read back from them.
    assert await count(migrated_engine, ChangeEventRow) == 0
    assert [s.event for s in await store.events()] == list(first.events)


async def test_the_baseline_is_observed_without_making_events(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline's every value is a first observation: the store writes them as versions
    without making an event object per value, and its events are made only when asked. A
    later poll from an empty state (after everything was revoked) is no baseline: its grants
    are changes, made and stored as events."""
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    made: list[int] = []
    real_events = snapshot_module._events

    def counting(*args: Any, **kwargs: Any) -> Any:
        events = real_events(*args, **kwargs)
        made.append(len(events))
        return events

    monkeypatch.setattr(snapshot_module, "_events", counting)
    positions = [pos(W1, TK1, S1, 5, UINT256_MAX), pos(W2, TK2, S1, 7, 0)]
    first = await store.record_poll(poll(1, batch(S1, (W1, W2), positions)))
    assert made == []
    assert (first.baseline, first.changes, first.versions_written) == (True, (), 3)
    assert first.change_count == 3
    assert first.events == diff_snapshots(EMPTY_SNAPSHOT, first.snapshot, threshold=T)
    assert [s.event for s in await store.events()] == list(first.events)
    assert await count(migrated_engine, ChangeEventRow) == 0

    await store.record_poll(poll(2, batch(S1, (W1, W2), [])))  # revoked, balances gone
    again = await store.record_poll(poll(3, batch(S1, (W1, W2), positions)))
    assert not again.baseline
    assert (
        again.events == again.changes == diff_snapshots(EMPTY_SNAPSHOT, again.snapshot, threshold=T)
    )
    assert again.change_count == again.versions_written == 3
    assert await count(migrated_engine, ChangeEventRow) == 6  # 3 gone, 3 back


async def test_a_change_writes_only_the_changed_values(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_poll(
        poll(1, batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 10), pos(W2, TK1, S1, 7, 20)]))
    )
    recorded = await store.record_poll(
        poll(2, batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, UINT256_MAX), pos(W2, TK1, S1, 7, 20)]))
    )
    assert recorded.versions_written == 1
    assert [(e.wallet, e.change, e.old, e.new) for e in recorded.events] == [
        (W1, Change.BECAME_UNLIMITED, 10, UINT256_MAX)
    ]


async def test_a_failed_batch_is_never_recorded_as_a_revoke(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_poll(
        poll(
            1,
            batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)]),
            batch(S2, (W1,), [pos(W1, TK1, S2, 5, 3)]),
        )
    )
    recorded = await store.record_poll(
        poll(2, batch(S1, (W1,), [], failed=True), batch(S2, (W1,), [pos(W1, TK1, S2, 5, 3)]))
    )
    assert recorded.outcome == "partial"
    assert recorded.events == ()
    assert recorded.snapshot.allowances[(1, W1, TK1, S1)] == 10
    async with migrated_engine.connect() as conn:
        row = (await conn.execute(select(Poll).where(Poll.id == recorded.poll_id))).one()
    assert (row.outcome, row.batches, row.batches_failed) == ("partial", 2, 1)
    assert "HTTP 503" in (row.error or "")


async def test_a_token_dropped_by_filter_empty_is_a_recorded_revoke(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)])))
    recorded = await store.record_poll(poll(2, batch(S1, (W1,), [])))
    assert {(e.change, e.old, e.new) for e in recorded.events} == {
        (Change.REVOKED, 10, 0),
        (Change.BALANCE_CHANGED, 5, 0),
    }
    assert recorded.snapshot == EMPTY_SNAPSHOT
    assert (await store.snapshot_at(T0 + timedelta(minutes=2))).snapshot == EMPTY_SNAPSHOT


async def test_a_poll_whose_every_batch_failed_changes_nothing(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)])))
    recorded = await store.record_poll(poll(2, batch(S1, (W1,), [], failed=True)))
    assert recorded.outcome == "failed"
    assert recorded.events == ()
    assert (await store.latest()).allowances == {(1, W1, TK1, S1): 10}


async def test_a_poll_failing_half_way_writes_only_its_failed_poll_row(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)])))
    before = {
        t: await count(migrated_engine, t)
        for t in (AllowanceVersion, BalanceVersion, ChangeEventRow, PollScope)
    }
    # The second position's amount cannot be stored: the write fails after earlier rows went in.
    broken = poll(
        2, batch(S1, (W1, W2), [pos(W1, TK1, S1, 6, 11), pos(W2, TK1, S1, 1, UINT256_MAX + 1)])
    )
    with pytest.raises(StoreError, match="could not record poll"):
        await store.record_poll(broken)
    assert {t: await count(migrated_engine, t) for t in before} == before
    async with migrated_engine.connect() as conn:
        outcomes = (await conn.execute(select(Poll.outcome).order_by(Poll.id))).scalars().all()
    assert outcomes == ["ok", "failed"]
    # The store recovers: the next good poll diffs against what was really stored.
    recorded = await store.record_poll(poll(3, batch(S1, (W1,), [pos(W1, TK1, S1, 6, 11)])))
    assert {(e.change, e.old, e.new) for e in recorded.events} == {
        (Change.INCREASED, 10, 11),
        (Change.BALANCE_CHANGED, 5, 6),
    }


async def test_two_writers_never_duplicate_events(migrated_engine: AsyncEngine) -> None:
    first, second = (
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
    )
    await first.latest()
    await second.latest()
    # A baseline first (its observations are stored as values only), so that the grant is a
    # change that both writers see.
    await first.record_poll(poll(0, batch(S1, (W1,), [pos(W1, TK1, S1, 1, 0)])))
    granted = [pos(W1, TK1, S1, 5, UINT256_MAX)]
    results = await asyncio.gather(
        first.record_poll(poll(1, batch(S1, (W1,), granted))),
        second.record_poll(poll(2, batch(S1, (W1,), granted))),
    )
    assert sorted(len(r.events) for r in results) == [0, 2]  # one grant + one balance change
    assert await count(migrated_engine, ChangeEventRow) == 2


@contextlib.contextmanager
def version_reads(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SELECTs on ``engine`` that read value versions, meanwhile."""
    reads: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = statement.strip().lower()
        if text.startswith("select") and "_versions" in text:
            reads.append(text)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield reads
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_the_first_poll_after_a_restart_reuses_the_snapshot_latest_read(
    migrated_engine: AsyncEngine,
) -> None:
    positions = [pos(W1, TK1, S1, 5, 10), pos(W2, TK2, S1, 7, UINT256_MAX)]
    await SqlSnapshotStore(migrated_engine, unlimited_threshold=T).record_poll(
        poll(1, batch(S1, (W1, W2), positions))
    )
    restarted = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    with version_reads(migrated_engine) as reads:
        restored = await restarted.latest()
        assert reads  # read once, here
        reads.clear()
        assert await restarted.latest() == restored  # still the head: no second read
        unchanged = await restarted.record_poll(poll(2, batch(S1, (W1, W2), positions)))
        changed = await restarted.record_poll(
            poll(3, batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 0), positions[1]]))
        )
    assert reads == []
    assert restored.allowances == {(1, W1, TK1, S1): 10, (1, W2, TK2, S1): UINT256_MAX}
    assert (unchanged.events, unchanged.versions_written) == ((), 0)
    assert [(e.wallet, e.change) for e in changed.events] == [(W1, Change.REVOKED)]


async def test_a_restored_snapshot_holds_each_address_once(migrated_engine: AsyncEngine) -> None:
    """The driver makes a new string per row and column; a daemon keeps the restored snapshot
    for its whole life, so every key naming an address must share one string for it."""
    positions = [
        pos(wallet, token, spender, 5, 10)
        for wallet in (W1, W2)
        for token in (TK1, TK2)
        for spender in (S1, S2)
    ]
    await SqlSnapshotStore(migrated_engine, unlimited_threshold=T).record_poll(
        poll(1, batch(S1, (W1, W2), positions[::2]), batch(S2, (W1, W2), positions[1::2]))
    )
    restored = await SqlSnapshotStore(migrated_engine, unlimited_threshold=T).latest()
    assert len(restored.allowances) == 8 and len(restored.balances) == 4
    keys = [*restored.allowances, *restored.balances]
    for address in (W1, W2, TK1, TK2, S1, S2):
        held = {id(part) for key in keys for part in key[1:] if part == address}
        assert len(held) == 1, f"{address} is held as {len(held)} strings"


async def test_latest_follows_another_writer(migrated_engine: AsyncEngine) -> None:
    reader, writer = (
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
    )
    assert await reader.latest() == EMPTY_SNAPSHOT
    await writer.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)])))
    assert (await reader.latest()).allowances == {(1, W1, TK1, S1): 10}
    # The reader's cache is now the writer's poll: its own next poll diffs against it.
    recorded = await reader.record_poll(poll(2, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 12)])))
    assert [(e.change, e.old, e.new) for e in recorded.events] == [(Change.INCREASED, 10, 12)]


@contextlib.contextmanager
def compared(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many positions each recorded poll compared with the previous snapshot."""
    seen: list[int] = []
    real = snapshots._changes

    def counting(previous: Snapshot, positions: Any, coverages: Any, threshold: int) -> Any:
        positions = list(positions)
        seen.append(len(positions))
        return real(previous, positions, coverages, threshold)

    monkeypatch.setattr(snapshots, "_changes", counting)
    yield seen


D1, D2 = b"\x01" * 16, b"\x02" * 16


async def test_answers_repeated_byte_for_byte_are_not_compared_again(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    granted = [pos(W1, TK1, S1, 5, UINT256_MAX), pos(W2, TK2, S1, 7, 3)]
    with compared(monkeypatch) as seen:
        first = await store.record_poll(poll(1, batch(S1, (W1, W2), granted, digest=D1)))
        again = await store.record_poll(poll(2, batch(S1, (W1, W2), granted, digest=D1)))
        assert seen == [2]  # the repeat compared nothing
        assert again.snapshot is first.snapshot
        assert again.events == () and again.versions_written == 0
        assert await count(migrated_engine, Poll) == 2
        assert await count(migrated_engine, PollScope) == 2  # its scope is still recorded
        # A different answer (another digest) is compared, and its revoke found.
        revoked = await store.record_poll(
            poll(3, batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 0)], digest=D2))
        )
        assert seen == [2, 1]
        assert [(e.wallet, e.change) for e in revoked.events if e.spender] == [
            (W1, Change.REVOKED),
            (W2, Change.REVOKED),
        ]


async def test_a_repeat_is_only_a_repeat_of_the_same_observation(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    granted = [pos(W1, TK1, S1, 5, UINT256_MAX)]
    with compared(monkeypatch) as seen:
        await store.record_poll(poll(1, batch(S1, (W1,), granted, digest=D1)))
        # Without a digest, the same positions are compared all the same.
        await store.record_poll(poll(2, batch(S1, (W1,), granted)))
        # A poll with another batch beside (a failed one) is another observation.
        await store.record_poll(
            poll(3, batch(S1, (W1,), granted, digest=D1), batch(S2, (W1,), [], failed=True))
        )
        await store.record_poll(poll(4, batch(S1, (W1,), granted, digest=D1)))
        # The same answer to a request for other wallets is another observation.
        await store.record_poll(poll(5, batch(S1, (W1, W2), granted, digest=D1)))
        assert seen == [1, 1, 1, 1, 1]
        await store.record_poll(poll(6, batch(S1, (W1, W2), granted, digest=D1)))
        assert seen == [1, 1, 1, 1, 1]


async def test_a_batch_that_failed_and_then_answers_empty_is_a_revoke(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    keep = batch(S1, (W1,), [pos(W1, TK1, S1, 5, 7)], digest=D1)
    await store.record_poll(poll(1, keep, batch(S2, (W1,), [pos(W1, TK2, S2, 0, 9)], digest=D2)))
    await store.record_poll(poll(2, keep, batch(S2, (W1,), [], failed=True)))
    # S2 answers again, with nothing: its approval of TK2 is gone, though the batch observed
    # "nothing" in the poll before as well (it failed then).
    recorded = await store.record_poll(poll(3, keep, batch(S2, (W1,), [])))
    assert [(e.spender, e.change) for e in recorded.events] == [(S2, Change.REVOKED)]


async def test_a_token_no_longer_excepted_is_covered_again(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_poll(
        poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 7), pos(W1, TK2, S1, 0, 9)], digest=D2))
    )
    only = batch(S1, (W1,), [pos(W1, TK1, S1, 5, 7)], digest=D1)
    # TK2 left out of the coverage (a token another source found, which 1inch did not
    # return): its value stands.
    first = await store.record_poll(poll(2, replace(only, except_tokens=frozenset({TK2}))))
    assert first.events == ()
    # The same bytes, but TK2 is covered now: its absence is a revoke.
    second = await store.record_poll(poll(3, only))
    assert [(e.token, e.change) for e in second.events] == [(TK2, Change.REVOKED)]


async def test_a_failed_poll_between_repeats_is_compared_from_the_stored_state(
    migrated_engine: AsyncEngine,
) -> None:
    ours, theirs = (
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
    )
    granted = batch(S1, (W1,), [pos(W1, TK1, S1, 5, UINT256_MAX)], digest=D1)
    await ours.record_poll(poll(1, granted))
    await theirs.record_poll(poll(2, batch(S1, (W1,), [], digest=D2)))
    failed = poll(3)
    await ours.record_failed_poll(
        started_at=failed.started_at, finished_at=failed.finished_at, error="timed out"
    )
    recorded = await ours.record_poll(poll(4, granted))
    assert [e.change for e in recorded.events if e.spender] == [Change.GRANTED]


async def test_a_repeated_answer_after_another_writer_is_compared_with_its_poll(
    migrated_engine: AsyncEngine,
) -> None:
    ours, theirs = (
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
        SqlSnapshotStore(migrated_engine, unlimited_threshold=T),
    )
    granted = [pos(W1, TK1, S1, 5, UINT256_MAX)]
    await ours.record_poll(poll(1, batch(S1, (W1,), granted, digest=D1)))
    await theirs.record_poll(poll(2, batch(S1, (W1,), [], digest=D2)))  # a revoke
    # Our answer is the same as our last one, but the state moved on under it: the grant is
    # back, and must be recorded as such.
    recorded = await ours.record_poll(poll(3, batch(S1, (W1,), granted, digest=D1)))
    assert [(e.change, e.old, e.new) for e in recorded.events] == [
        (Change.GRANTED, 0, UINT256_MAX),
        (Change.BALANCE_CHANGED, 0, 5),
    ]
    assert (await ours.latest()).allowances == {(1, W1, TK1, S1): UINT256_MAX}


async def test_latest_waits_for_a_poll_being_recorded_on_postgresql() -> None:
    with postgres_database() as url:
        engine = create_engine(url)
        try:
            await migrate.upgrade(engine)
            await _latest_waits_for_a_poll_being_recorded(engine)
        finally:
            await engine.dispose()


async def _latest_waits_for_a_poll_being_recorded(engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(engine, unlimited_threshold=T)
    await store.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)])))
    # A poll being recorded (under the writers' lock, not committed yet) and then a failed
    # poll committed with a higher id: the head is visible before the values below it.
    async with engine.connect() as recording:
        await recording.execute(select(func.pg_advisory_xact_lock(POLL_LOCK_KEY)))
        poll_id = await recording.scalar(
            insert(Poll)
            .values(started_at=T0, finished_at=T0, outcome="ok", batches=1, batches_failed=0,
                    positions=1, events=1, versions_written=1)
            .returning(Poll.id)
        )  # fmt: skip
        await recording.execute(
            insert(AllowanceVersion).values(
                chain_id=1, wallet=W1, token=TK1, spender=S1, poll_id=poll_id, amount=20
            )
        )
        await store.record_failed_poll(started_at=T0, finished_at=T0, error="timed out")
        restarted = SqlSnapshotStore(engine, unlimited_threshold=T)
        reading = asyncio.create_task(restarted.latest())
        async with engine.connect() as watcher:
            waiting = (
                select(func.count())
                .select_from(text("pg_locks"))
                .where(text("locktype = 'advisory' AND NOT granted"))
            )
            for _ in range(500):
                if await watcher.scalar(waiting):
                    break
                await asyncio.sleep(0.01)  # polling for the lock wait, not for time to pass
        assert not reading.done()
        await recording.commit()
    assert (await reading).allowances == {(1, W1, TK1, S1): 20}
    recorded = await restarted.record_poll(poll(3, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 20)])))
    assert recorded.events == ()


async def test_events_are_stored_with_their_poll_and_filterable(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_poll(
        poll(1, batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 10), pos(W2, TK1, S1, 0, 3)]))
    )
    second = await store.record_poll(
        poll(2, batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 0), pos(W2, TK1, S1, 0, 3)]))
    )
    everything = await store.events()
    assert len(everything) == 4
    recent = await store.events(since=T0 + timedelta(minutes=2))
    assert [(s.poll_id, s.event.change, s.observed_at) for s in recent] == [
        (second.poll_id, Change.REVOKED, T0 + timedelta(minutes=2))
    ]
    assert {s.event.wallet for s in await store.events(wallet=W2)} == {W2}
    assert await store.events(spender=S2) == []
    assert len(await store.events(chain_id=1, until=T0 + timedelta(minutes=1))) == 3


async def test_events_by_kind_after_the_baseline_poll(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    first = await store.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)])))
    await store.record_poll(
        poll(2, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10), pos(W1, TK2, S1, 0, 3)]))
    )
    assert await store.baseline_poll_id() == first.poll_id
    fresh = await store.events(changes=[Change.GRANTED], after_poll=first.poll_id)
    assert [(s.event.token, s.event.change) for s in fresh] == [(TK2, Change.GRANTED)]
    await store.record_poll(
        poll(3, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10), pos(W1, TK2, S1, 0, 0)]))
    )
    await store.record_poll(
        poll(4, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10), pos(W1, TK2, S1, 0, 9)]))
    )
    latest = await store.events(
        changes=[Change.GRANTED], after_poll=first.poll_id, latest_per_key=True
    )
    assert [(s.event.token, s.event.new, s.poll_id) for s in latest] == [
        (TK2, 9, fresh[0].poll_id + 2)
    ]


async def test_snapshot_before_history_is_an_error(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    with pytest.raises(StoreError, match="no polls yet"):
        await store.snapshot_at(T0)
    await store.record_poll(poll(5, batch(S1, (W1,), [])))
    with pytest.raises(StoreError, match="history starts at"):
        await store.snapshot_at(T0)


async def test_prune_keeps_the_retained_window_reconstructable(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    amounts = [10, 20, 20, 30, 0, 40]
    for minute, amount in enumerate(amounts, start=1):
        await store.record_poll(
            poll(
                minute,
                batch(S1, (W1, W2), [pos(W1, TK1, S1, 1, amount), pos(W2, TK2, S1, minute, 7)]),
            )
        )
    before = {m: (await store.snapshot_at(T0 + timedelta(minutes=m))).snapshot for m in range(3, 7)}
    result = await store.prune(older_than=T0 + timedelta(minutes=3))
    assert result.polls_deleted == 2
    assert result.events_deleted > 0
    for minute, snapshot in before.items():
        assert (await store.snapshot_at(T0 + timedelta(minutes=minute))).snapshot == snapshot
    with pytest.raises(StoreError, match="history starts at"):
        await store.snapshot_at(T0 + timedelta(minutes=2))
    assert all(e.observed_at >= T0 + timedelta(minutes=3) for e in await store.events())
    # Recording goes on normally after a prune.
    recorded = await store.record_poll(
        poll(7, batch(S1, (W1, W2), [pos(W1, TK1, S1, 1, 40), pos(W2, TK2, S1, 6, 7)]))
    )
    assert recorded.events == ()


async def test_prune_dry_run_counts_exactly_what_prune_deletes_and_deletes_nothing(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    for minute, amount in enumerate([10, 20, 20, 30, 0, 40], start=1):
        await store.record_poll(
            poll(
                minute,
                batch(S1, (W1, W2), [pos(W1, TK1, S1, 1, amount), pos(W2, TK2, S1, minute, 7)]),
            )
        )
    tables = (Poll, PollScope, AllowanceVersion, BalanceVersion, ChangeEventRow)
    rows_before = [await count(migrated_engine, table) for table in tables]
    cutoff = T0 + timedelta(minutes=4)

    planned = await store.prune(older_than=cutoff, dry_run=True)

    assert [await count(migrated_engine, table) for table in tables] == rows_before
    assert planned.polls_deleted == 3 and planned.versions_deleted > 0
    assert planned == await store.prune(older_than=cutoff)
    assert await store_invariants(migrated_engine) == []
    nothing = await store.prune(older_than=T0, dry_run=True)
    assert (nothing.cutoff_poll_id, nothing.polls_deleted) == (None, 0)


async def test_first_poll_is_the_first_that_observed_anything(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    assert await store.first_poll() is None and await store.poll_count() == 0
    await store.record_poll(poll(1, batch(S1, (W1,), [], failed=True)))
    assert await store.first_poll() is None and await store.poll_count() == 1
    second = await store.record_poll(poll(2, batch(S1, (W1,), [pos(W1, TK1, S1, 1, 10)])))
    await store.record_poll(poll(3, batch(S1, (W1,), [pos(W1, TK1, S1, 1, 20)])))
    first = await store.first_poll()
    assert first is not None
    assert (first.poll_id, first.finished_at) == (second.poll_id, T0 + timedelta(minutes=2))
    assert store.describe() == migrated_engine.url.render_as_string(hide_password=True)


async def test_prune_never_moves_the_kept_values_to_a_failed_poll(
    migrated_engine: AsyncEngine,
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    for minute, amount in ((1, 10), (2, 20)):
        await store.record_poll(poll(minute, batch(S1, (W1,), [pos(W1, TK1, S1, 1, amount)])))
    at = T0 + timedelta(minutes=3)
    await store.record_failed_poll(started_at=at, finished_at=at, error="poll timed out")
    await store.record_poll(poll(4, batch(S1, (W1,), [pos(W1, TK1, S1, 1, 40)])))
    snapshot = (await store.snapshot_at(at)).snapshot

    result = await store.prune(older_than=at)

    assert result.polls_deleted == 1
    assert await store_invariants(migrated_engine) == []
    assert (await store.snapshot_at(at)).snapshot == snapshot
    first = await store.first_poll()
    assert first is not None and first.finished_at == T0 + timedelta(minutes=2)


async def test_token_metadata_follows_upstream(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10, symbol="OLD")])))
    await store.record_poll(poll(2, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10, symbol="NEW")])))
    assert (await store.tokens())[(1, TK1)].symbol == "NEW"


async def test_record_failed_poll_writes_one_row(migrated_engine: AsyncEngine) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    await store.record_failed_poll(started_at=T0, finished_at=T0, error="poll timed out after 50s")
    async with migrated_engine.connect() as conn:
        row = (await conn.execute(select(Poll))).one()
    assert (row.outcome, row.error) == ("failed", "poll timed out after 50s")


# -- reconstruct(at t) equals what was observed at t, for any sequence of polls ----------------

wallets = st.sampled_from([W1, W2])
spenders = st.sampled_from([S1, S2])
values = st.sampled_from([0, 1, 10**18, 2**96 - 1, 2**160 - 1, UINT256_MAX])
batch_strategy = st.builds(
    lambda spender, wallet_set, failed, rows: batch(
        spender,
        tuple(sorted(wallet_set)),
        [pos(w, t, spender, b, a) for w, t, b, a in rows if w in wallet_set],
        failed=failed,
    ),
    spenders,
    st.sets(wallets, min_size=1),
    st.booleans(),
    st.lists(st.tuples(wallets, st.sampled_from([TK1, TK2]), values, values), max_size=4),
)
poll_sequences = st.lists(st.lists(batch_strategy, min_size=1, max_size=3), min_size=1, max_size=6)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=poll_sequences)
async def test_reconstruct_at_any_poll_equals_what_was_observed(
    migrated_engine: AsyncEngine, sequence: list[list[BatchOutcome]]
) -> None:
    await clear(migrated_engine)
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    observed: list[Snapshot] = []
    for minute, batches in enumerate(sequence, start=1):
        observed.append((await store.record_poll(poll(minute, *batches))).snapshot)
    for minute, snapshot in enumerate(observed, start=1):
        assert (
            await store.snapshot_at(T0 + timedelta(minutes=minute, seconds=30))
        ).snapshot == snapshot
    assert await store_invariants(migrated_engine) == []
    replayed = apply_events(EMPTY_SNAPSHOT, [s.event for s in await store.events()])
    assert replayed == observed[-1]


async def _history(engine: AsyncEngine) -> SqlSnapshotStore:
    store = SqlSnapshotStore(engine, unlimited_threshold=T)
    for minute, amount in enumerate([10, 20, 0, 30], start=1):
        await store.record_poll(poll(minute, batch(S1, (W1,), [pos(W1, TK1, S1, 1, amount)])))
    assert await store_invariants(engine) == []
    return store


async def test_invariants_hold_after_prune(migrated_engine: AsyncEngine) -> None:
    store = await _history(migrated_engine)
    await store.prune(older_than=T0 + timedelta(minutes=2))
    assert await store_invariants(migrated_engine) == []


@pytest.mark.parametrize(
    ("corruption", "problem"),
    [
        (
            "DELETE FROM change_events WHERE poll_id = 2 AND spender IS NOT NULL",
            "poll 2 has no event",
        ),
        ("UPDATE polls SET events = 7 WHERE id = 3", "poll 3: records 7 events but 1 are stored"),
        ("UPDATE polls SET outcome = 'failed' WHERE id = 2", "written by failed poll 2"),
        ("DELETE FROM allowance_versions WHERE poll_id = 3", "has no matching value version"),
    ],
)
async def test_invariant_violations_are_named(
    migrated_engine: AsyncEngine, corruption: str, problem: str
) -> None:
    await _history(migrated_engine)
    async with migrated_engine.begin() as conn:
        await conn.execute(text(corruption))
    problems = await store_invariants(migrated_engine)
    assert any(problem in p for p in problems), problems


async def test_a_repeated_value_is_a_violation(migrated_engine: AsyncEngine) -> None:
    await _history(migrated_engine)
    async with migrated_engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE allowance_versions SET amount = "
                "(SELECT amount FROM allowance_versions WHERE poll_id = 1) WHERE poll_id = 2"
            )
        )
    problems = await store_invariants(migrated_engine)
    assert any("repeats the previous value" in p for p in problems), problems


async def test_findings_are_opened_updated_and_resolved(migrated_engine: AsyncEngine) -> None:
    from monitor.risk.model import Finding, RuleName, Severity

    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)

    def finding(token: str, *, suppressed: bool = False) -> Finding:
        return Finding(
            rule=RuleName.UNLIMITED_APPROVAL, severity=Severity.WARNING, chain_id=1, wallet=W1,
            spender=S1, token=token, detail="unlimited", suppressed=suppressed,
        )  # fmt: skip

    opened = await store.sync_findings([finding(TK1), finding(TK2)], now=T0)
    assert (opened.opened, opened.resolved) == (2, 0)
    again = await store.sync_findings(
        [finding(TK1), finding(TK2, suppressed=True)], now=T0 + timedelta(minutes=1)
    )
    assert (again.opened, again.updated, again.resolved) == (0, 1, 0)
    later = T0 + timedelta(minutes=2)
    gone = await store.sync_findings([finding(TK2, suppressed=True)], now=later)
    assert (gone.opened, gone.resolved) == (0, 1)
    open_now = await store.findings()
    assert [(f.token, f.suppressed, f.opened_at) for f in open_now] == [(TK2, True, T0)]
    everything = await store.findings(include_resolved=True)
    assert [(f.token, f.resolved_at) for f in everything] == [(TK1, later), (TK2, None)]


# -- the baseline, stored once ------------------------------------------------------------------


async def _baseline_and_changes(engine: AsyncEngine) -> SqlSnapshotStore:
    """A failed poll, a baseline (two allowances and two balances over two wallets), then a
    revoke, a grant and a balance change."""
    store = SqlSnapshotStore(engine, unlimited_threshold=T)
    await store.record_failed_poll(
        started_at=T0, finished_at=T0 + timedelta(seconds=1), error="timed out"
    )
    await store.record_poll(
        poll(1, batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 10), pos(W2, TK2, S1, 7, UINT256_MAX)]))
    )
    await store.record_poll(
        poll(
            2,
            batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 0), pos(W2, TK2, S1, 8, UINT256_MAX)]),
        )
    )
    await store.record_poll(
        poll(3, batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 4), pos(W2, TK2, S1, 8, UINT256_MAX)]))
    )
    return store


async def test_the_baseline_is_stored_as_values_only_and_read_back_as_first_observations(
    migrated_engine: AsyncEngine,
) -> None:
    store = await _baseline_and_changes(migrated_engine)
    baseline = await store.baseline_poll_id()
    async with migrated_engine.connect() as conn:
        stored = (await conn.execute(select(ChangeEventRow.poll_id))).scalars().all()
        counted = dict((await conn.execute(select(Poll.id, Poll.events))).all())
    assert baseline not in stored and len(stored) == 3
    assert counted[baseline] == 0
    everything = await store.events()
    assert [
        (e.poll_id - baseline, e.event.change, e.event.old, e.event.new) for e in everything
    ] == [
        (0, Change.GRANTED, 0, 10),
        (0, Change.GRANTED, 0, UINT256_MAX),
        (0, Change.BALANCE_CHANGED, 0, 5),
        (0, Change.BALANCE_CHANGED, 0, 7),
        (1, Change.REVOKED, 10, 0),
        (1, Change.BALANCE_CHANGED, 7, 8),
        (2, Change.GRANTED, 0, 4),
    ]
    assert apply_events(EMPTY_SNAPSHOT, [e.event for e in everything]) == await store.latest()
    assert await store_invariants(migrated_engine) == []


async def test_every_filter_applies_to_the_baseline_first_observations(
    migrated_engine: AsyncEngine,
) -> None:
    store = await _baseline_and_changes(migrated_engine)
    baseline = await store.baseline_poll_id()
    assert baseline is not None

    def news(found: list[Any]) -> list[tuple[int, int]]:
        return [(s.poll_id - baseline, s.event.new) for s in found]

    assert news(await store.events(wallet=W2)) == [(0, UINT256_MAX), (0, 7), (1, 8)]
    assert news(await store.events(spender=S1, wallet=W1)) == [(0, 10), (1, 0), (2, 4)]
    assert news(await store.events(spender=S2)) == []
    assert news(await store.events(chain_id=2)) == []
    assert news(await store.events(changes=[Change.GRANTED])) == [(0, 10), (0, UINT256_MAX), (2, 4)]
    assert news(await store.events(changes=[Change.REVOKED])) == [(1, 0)]
    assert news(await store.events(after_poll=baseline)) == [(1, 0), (1, 8), (2, 4)]
    assert news(await store.events(since=T0 + timedelta(minutes=2))) == [(1, 0), (1, 8), (2, 4)]
    assert news(await store.events(until=T0 + timedelta(minutes=1))) == [
        (0, 10),
        (0, UINT256_MAX),
        (0, 5),
        (0, 7),
    ]
    assert news(await store.events(latest_per_key=True)) == [
        (0, UINT256_MAX),
        (0, 5),
        (1, 8),
        (2, 4),
    ]
    assert news(await store.events(limit=4)) == [(0, 7), (1, 0), (1, 8), (2, 4)]
    assert news(await store.events(limit=2)) == [(1, 8), (2, 4)]
    assert news(await store.events(wallet=W1, latest_per_key=True, limit=1)) == [(2, 4)]


async def test_a_prune_makes_the_cutoff_the_baseline_and_replay_still_gives_the_latest(
    migrated_engine: AsyncEngine,
) -> None:
    store = await _baseline_and_changes(migrated_engine)
    dry = await store.prune(older_than=T0 + timedelta(minutes=2, seconds=1), dry_run=True)
    result = await store.prune(older_than=T0 + timedelta(minutes=2, seconds=1))
    assert result == dry
    # The events of polls 0 and 1 go, and the cutoff's own (its revoke and balance change):
    # its values, every key's value at the cutoff, are its first observations now.
    assert result.events_deleted == 2
    assert await store.baseline_poll_id() == result.cutoff_poll_id
    everything = await store.events()
    assert [(e.event.change, e.event.new) for e in everything] == [
        (Change.GRANTED, UINT256_MAX),
        (Change.BALANCE_CHANGED, 5),
        (Change.BALANCE_CHANGED, 8),
        (Change.GRANTED, 4),
    ]
    assert apply_events(EMPTY_SNAPSHOT, [e.event for e in everything]) == await store.latest()
    assert await store_invariants(migrated_engine) == []


async def test_an_event_stored_for_the_baseline_is_named(migrated_engine: AsyncEngine) -> None:
    store = await _baseline_and_changes(migrated_engine)
    baseline = await store.baseline_poll_id()
    async with migrated_engine.begin() as conn:
        await conn.execute(
            update(ChangeEventRow)
            .where(ChangeEventRow.poll_id == baseline + 2)
            .values(poll_id=baseline)
        )
    problems = await store_invariants(migrated_engine)
    assert any(f"stored for the baseline poll {baseline}" in p for p in problems), problems


async def test_the_baseline_migration_moves_stored_first_observations_to_values_and_back(
    migrated_engine: AsyncEngine,
) -> None:
    store = await _baseline_and_changes(migrated_engine)
    baseline = await store.baseline_poll_id()
    before = await store.events()
    await migrate.downgrade(migrated_engine, "0003")
    async with migrated_engine.connect() as conn:
        rows = (
            await conn.execute(
                select(ChangeEventRow.change, ChangeEventRow.old, ChangeEventRow.new)
                .where(ChangeEventRow.poll_id == baseline)
                .order_by(ChangeEventRow.id)
            )
        ).all()
        recorded = await conn.scalar(select(Poll.events).where(Poll.id == baseline))
    # As the versions before 0004 stored them: beside the values, in the diff's order.
    assert [tuple(r) for r in rows] == [
        (e.event.change.value, 0, e.event.new) for e in before if e.poll_id == baseline
    ]
    assert recorded == 4
    await migrate.upgrade(migrated_engine)
    assert await count(migrated_engine, ChangeEventRow) == 3
    assert await SqlSnapshotStore(migrated_engine, unlimited_threshold=T).events() == before
    assert await store_invariants(migrated_engine) == []


async def test_the_baseline_is_the_first_poll_recorded_even_if_another_finished_before_it(
    migrated_engine: AsyncEngine,
) -> None:
    """Two processes' first polls, recorded in the opposite order of their finishing: the
    baseline is the one that found the store empty, and no event is told twice."""
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    recorded_first = await store.record_poll(poll(2, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)])))
    other = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    recorded_second = await other.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 20)])))
    assert await store.baseline_poll_id() == recorded_first.poll_id
    events = await store.events()
    assert [(e.poll_id, e.event.change, e.event.old, e.event.new) for e in events] == [
        (recorded_first.poll_id, Change.GRANTED, 0, 10),
        (recorded_first.poll_id, Change.BALANCE_CHANGED, 0, 5),
        (recorded_second.poll_id, Change.INCREASED, 10, 20),
    ]
    assert await store_invariants(migrated_engine) == []


def test_positions_rewritten_by_the_preferred_source_lose_their_answer_digest() -> None:
    """A 1inch batch whose positions take the chain's live values no longer holds what its
    answer's bytes said: its digest must not let the store take it for a repeat."""
    from monitor.domain.records import prefer_source

    oneinch = batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)], digest=D1)
    untouched = batch(S2, (W1,), [pos(W1, TK2, S2, 5, 10)], digest=D2)
    chain = replace(
        batch(S1, (W1,), [pos(W1, TK1, S1, 5, 0)]), source="chain", tokens=frozenset({TK1})
    )
    result = prefer_source(poll(1, oneinch, untouched, chain), "chain")
    rewritten, kept, _ = result.batches
    assert rewritten.answer_digest is None
    assert [(p.allowance, p.balance) for p in rewritten.positions] == [(0, 5)]
    assert kept is untouched and kept.answer_digest == D2


async def test_a_poll_cancelled_as_it_commits_leaves_no_cache_ahead_of_the_database(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlSnapshotStore(migrated_engine, unlimited_threshold=T)
    granted = poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, UINT256_MAX, symbol="ONE")]))
    real = SqlSnapshotStore._upsert_tokens

    async def cancelled_after(self: SqlSnapshotStore, conn: Any, positions: Any) -> None:
        await real(self, conn, positions)  # the token cache now holds TK1...
        raise asyncio.CancelledError  # ...and the transaction rolls back

    monkeypatch.setattr(SqlSnapshotStore, "_upsert_tokens", cancelled_after)
    with pytest.raises(asyncio.CancelledError):
        await store.record_poll(granted)
    monkeypatch.setattr(SqlSnapshotStore, "_upsert_tokens", real)
    assert await count(migrated_engine, Poll) == 0
    # The same poll again: everything it holds is written, its token included.
    recorded = await store.record_poll(granted)
    assert [e.change for e in recorded.events if e.spender] == [Change.GRANTED]
    assert (await store.tokens())[(1, TK1)].symbol == "ONE"
    assert (await SqlSnapshotStore(migrated_engine, unlimited_threshold=T).tokens())[
        (1, TK1)
    ].symbol == "ONE"
