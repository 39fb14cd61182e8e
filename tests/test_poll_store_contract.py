"""The ``PollStore`` port (``monitor.ports``): one suite, run against the in-memory store and
the SQL store on SQLite and PostgreSQL, so that the fast poll-cycle tests on the memory store
stand for the real one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config.model import DEFAULT_UNLIMITED_THRESHOLD as T
from monitor.domain.model import UINT256_MAX
from monitor.domain.records import FindingChanges
from monitor.domain.snapshot import Change, Snapshot
from monitor.memory import MemoryStore
from monitor.ports import PollStore
from monitor.risk.model import RuleName, Severity
from monitor.risk.rules import Finding
from monitor.store import migrate
from monitor.store.engine import create_engine
from monitor.store.snapshots import SqlSnapshotStore
from tests.databases import postgres_database
from tests.store_helpers import S1, S2, T0, TK1, TK2, W1, W2, batch, poll, pos


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PollStore]:
    if request.param == "memory":
        yield MemoryStore(unlimited_threshold=T)
        return
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'contract.sqlite'}"
        engine = create_engine(url)
        await migrate.upgrade(engine)
        try:
            yield SqlSnapshotStore(engine, unlimited_threshold=T)
        finally:
            await engine.dispose()
        return
    with postgres_database() as url:
        engine = create_engine(url)
        await migrate.upgrade(engine)
        try:
            yield SqlSnapshotStore(engine, unlimited_threshold=T)
        finally:
            await engine.dispose()


def finding(rule: RuleName, wallet: str, detail: str = "d") -> Finding:
    return Finding(
        rule=rule,
        severity=Severity.WARNING,
        chain_id=1,
        wallet=wallet,
        spender=S1,
        token=TK1,
        detail=detail,
    )


async def test_an_empty_store_knows_nothing(store: PollStore) -> None:
    assert await store.latest() == Snapshot()
    assert await store.last_poll() is None
    assert await store.baseline_poll_id() is None
    assert await store.upstream_status() == {}
    assert await store.last_successes() == {}
    assert await store.events() == []
    assert await store.tokens() == {}


async def test_grants_revokes_and_a_failed_batch_are_recorded_alike(store: PollStore) -> None:
    first = await store.record_poll(
        poll(
            1,
            batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 10), pos(W2, TK1, S1, 0, UINT256_MAX)]),
            batch(S2, (W1, W2), [pos(W1, TK2, S2, 0, 7)]),
        )
    )
    assert first.outcome == "ok"
    assert sorted(e.change for e in first.events) == sorted(
        [Change.GRANTED, Change.GRANTED, Change.GRANTED, Change.BALANCE_CHANGED]
    )
    assert await store.latest() == first.snapshot
    assert first.snapshot.allowances == {
        (1, W1, TK1, S1): 10,
        (1, W2, TK1, S1): UINT256_MAX,
        (1, W1, TK2, S2): 7,
    }
    assert await store.baseline_poll_id() == first.poll_id
    assert await store.last_poll() == (T0 + timedelta(minutes=1), "ok")
    assert await store.upstream_status() == {1: True}
    at_1 = T0 + timedelta(minutes=1)
    assert await store.last_successes() == {(1, S1): at_1, (1, S2): at_1}
    assert set(await store.tokens()) == {(1, TK1), (1, TK2)}

    # W1 revokes S1; S2's batch fails: its values stand, and the poll is partial.
    second = await store.record_poll(
        poll(
            2,
            batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 0), pos(W2, TK1, S1, 0, UINT256_MAX)]),
            batch(S2, (W1, W2), [], failed=True),
        )
    )
    assert second.outcome == "partial"
    assert [(e.wallet, e.spender, e.change) for e in second.events] == [(W1, S1, Change.REVOKED)]
    assert (1, W1, TK2, S2) in second.snapshot.allowances
    assert await store.upstream_status() == {1: False}
    assert await store.last_successes() == {(1, S1): T0 + timedelta(minutes=2), (1, S2): at_1}

    await store.record_failed_poll(
        started_at=T0 + timedelta(minutes=3),
        finished_at=T0 + timedelta(minutes=3, seconds=1),
        error="timed out",
    )
    assert await store.last_poll() == (T0 + timedelta(minutes=3, seconds=1), "failed")
    assert await store.upstream_status() == {1: False}  # the newest poll with batches
    assert await store.latest() == second.snapshot


async def test_an_unchanged_poll_hands_back_the_very_same_snapshot(store: PollStore) -> None:
    """So that the risk evaluator and the metrics see "unchanged" at once, by identity."""
    positions = [pos(W1, TK1, S1, 5, 10), pos(W2, TK2, S1, 7, UINT256_MAX)]
    first = await store.record_poll(poll(1, batch(S1, (W1, W2), positions)))
    again = await store.record_poll(poll(2, batch(S1, (W1, W2), positions)))
    assert again.events == ()
    assert again.snapshot is first.snapshot
    changed = await store.record_poll(
        poll(3, batch(S1, (W1, W2), [pos(W1, TK1, S1, 5, 11), positions[1]]))
    )
    assert changed.snapshot is not first.snapshot
    assert changed.snapshot.allowances[(1, W1, TK1, S1)] == 11
    assert first.snapshot.allowances[(1, W1, TK1, S1)] == 10  # the earlier one untouched


async def test_the_baseline_is_the_first_poll_that_observed_anything(store: PollStore) -> None:
    await store.record_failed_poll(
        started_at=T0, finished_at=T0 + timedelta(seconds=1), error="timed out"
    )
    assert await store.baseline_poll_id() is None
    holding = await store.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 0)])))
    await store.record_poll(poll(2, batch(S1, (W1,), [pos(W1, TK1, S1, 5, 10)])))
    # a first poll that saw only a balance is the baseline: the later grant is a change
    assert await store.baseline_poll_id() == holding.poll_id


async def test_events_filter_as_the_poll_cycle_asks(store: PollStore) -> None:
    await store.record_poll(poll(1, batch(S1, (W1,), [pos(W1, TK1, S1, 0, 10)])))
    await store.record_poll(poll(2, batch(S1, (W1,), [pos(W1, TK1, S1, 0, 20)])))
    await store.record_poll(poll(3, batch(S1, (W1,), [pos(W1, TK1, S1, 0, 30)])))
    everything = await store.events()
    assert [(e.poll_id, e.event.change, e.event.new) for e in everything] == [
        (1, Change.GRANTED, 10),
        (2, Change.INCREASED, 20),
        (3, Change.INCREASED, 30),
    ]
    after_first = await store.events(after_poll=1)
    assert [e.event.new for e in after_first] == [20, 30]
    newest = await store.events(latest_per_key=True)
    assert [e.event.new for e in newest] == [30]
    assert [e.event.new for e in await store.events(limit=2)] == [20, 30]
    assert [e.event.new for e in await store.events(changes=[Change.GRANTED])] == [10]
    since = T0 + timedelta(minutes=2)
    assert [e.event.new for e in await store.events(since=since, wallet=W1, spender=S1)] == [
        20,
        30,
    ]
    assert await store.events(wallet=W2) == []


async def test_findings_open_update_and_resolve(store: PollStore) -> None:
    now = T0
    unlimited = finding(RuleName.UNLIMITED_APPROVAL, W1)
    untrusted = finding(RuleName.UNTRUSTED_SPENDER, W2)
    assert await store.sync_findings([unlimited, untrusted], now=now) == FindingChanges(
        opened=2, resolved=0, updated=0
    )
    assert await store.sync_findings([unlimited, untrusted], now=now) == FindingChanges(
        opened=0, resolved=0, updated=0
    )
    changed = finding(RuleName.UNLIMITED_APPROVAL, W1, detail="other")
    assert await store.sync_findings([changed], now=now) == FindingChanges(
        opened=0, resolved=1, updated=1
    )
