"""``monitor.store.bulk.insert_rows`` writes exactly what ``conn.execute(insert(...))`` writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.domain.model import UINT256_MAX
from monitor.store import migrate
from monitor.store.bulk import insert_rows
from monitor.store.engine import create_engine
from monitor.store.schema import AllowanceVersion, ChangeEventRow
from monitor.store.snapshots import SqlSnapshotStore
from tests.databases import postgres_database

NOW = datetime(2026, 12, 3, 17, 0, 0, 123456, tzinfo=UTC)


def _versions(poll_id: int, count: int) -> list[dict[str, Any]]:
    amounts = [0, 1, 255, 256, 10**18, UINT256_MAX - 1, UINT256_MAX]
    return [
        {
            "chain_id": 1 + i % 2,
            "wallet": f"0x{i:040x}",
            "token": f"0x{i % 5 + 10**6:040x}",
            "spender": f"0x{i % 3 + 10**8:040x}",
            "amount": amounts[i % len(amounts)],
            "poll_id": poll_id,
        }
        for i in range(count)
    ]


def _bulk(rows: list[dict[str, Any]]) -> tuple[list[str], Any]:
    """``rows`` as insert_rows takes them: column names, then a generator of value tuples, in
    an order of columns that is not the table's (reversed)."""
    columns = list(reversed(list(rows[0])))
    return columns, (tuple(row[c] for c in columns) for row in rows)


async def _poll(engine: AsyncEngine) -> int:
    """A poll row for the versions to belong to (the store's own failed-poll record)."""
    store = SqlSnapshotStore(engine, unlimited_threshold=UINT256_MAX)
    return await store.record_failed_poll(started_at=NOW, finished_at=NOW, error="test")


VERSION_COLUMNS = "chain_id, wallet, token, spender, amount"
EVENT_COLUMNS = "observed_at, chain_id, wallet, token, spender, change, old, new"


async def _raw(engine: AsyncEngine, table: str, poll_id: int) -> list[tuple[Any, ...]]:
    """The stored values as the driver returns them (bytes, text, numbers), poll_id aside."""
    columns = VERSION_COLUMNS if table == "allowance_versions" else EVENT_COLUMNS
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT {columns} FROM {table} WHERE poll_id = :p ORDER BY wallet, spender, token"
            ),
            {"p": poll_id},
        )
        return [tuple(r) for r in rows]


async def test_bulk_rows_are_stored_byte_for_byte_as_core_stores_them(
    migrated_engine: AsyncEngine,
) -> None:
    await _bulk_is_core(migrated_engine)


async def test_the_psycopg_driver_binds_named_parameters_the_same() -> None:
    """psycopg takes named parameters (dicts), asyncpg and SQLite positional ones (tuples)."""
    with postgres_database() as url:
        engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
        try:
            await migrate.upgrade(engine)
            await _bulk_is_core(engine)
        finally:
            await engine.dispose()


async def _bulk_is_core(migrated_engine: AsyncEngine) -> None:
    core_poll, bulk_poll = await _poll(migrated_engine), await _poll(migrated_engine)
    async with migrated_engine.begin() as conn:
        await conn.execute(insert(AllowanceVersion), _versions(core_poll, 40))
        # Chunks smaller than the rows: every chunk is written, none twice.
        assert (
            await insert_rows(conn, AllowanceVersion, *_bulk(_versions(bulk_poll, 40)), chunk=7)
            == 40
        )
        events = [
            {
                "poll_id": poll_id,
                "observed_at": NOW,
                "chain_id": 1,
                "wallet": f"0x{i:040x}",
                "token": f"0x{10**6:040x}",
                "spender": None if i % 2 else f"0x{10**8:040x}",
                "change": "increased",
                "old": i,
                "new": UINT256_MAX - i,
            }
            for poll_id in (core_poll,)
            for i in range(6)
        ]
        await conn.execute(insert(ChangeEventRow), events)
        await insert_rows(
            conn, ChangeEventRow, *_bulk([{**e, "poll_id": bulk_poll} for e in events])
        )
    core = await _raw(migrated_engine, "allowance_versions", core_poll)
    bulk = await _raw(migrated_engine, "allowance_versions", bulk_poll)
    assert len(bulk) == 40
    assert bulk == core
    core_events = await _raw(migrated_engine, "change_events", core_poll)
    bulk_events = await _raw(migrated_engine, "change_events", bulk_poll)
    assert len(bulk_events) == 6
    assert bulk_events == core_events
    async with migrated_engine.connect() as conn:
        read = (
            await conn.execute(
                select(AllowanceVersion.wallet, AllowanceVersion.amount)
                .where(AllowanceVersion.poll_id == bulk_poll)
                .order_by(AllowanceVersion.wallet)
            )
        ).all()
    assert [(w, a) for w, a in read] == [(v["wallet"], v["amount"]) for v in _versions(0, 40)]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"wallet": "0x" + "AB" * 20}, "not an address"),
        ({"amount": UINT256_MAX + 1}, "outside 0..2"),
        ({"amount": -1}, "outside 0..2"),
        ({"amount": 1.0}, "must be an int"),
    ],
)
async def test_a_bad_value_is_refused_as_core_refuses_it_and_nothing_is_written(
    migrated_engine: AsyncEngine, change: dict[str, Any], problem: str
) -> None:
    poll_id = await _poll(migrated_engine)
    rows = _versions(poll_id, 12)
    rows[9] = {**rows[9], **change}  # in the second chunk: the first one was sent already
    with pytest.raises(StatementError, match=problem):
        async with migrated_engine.begin() as conn:
            await insert_rows(conn, AllowanceVersion, *_bulk(rows), chunk=5)
    assert await _raw(migrated_engine, "allowance_versions", poll_id) == []


async def test_rows_that_miss_a_column_are_refused_by_name(migrated_engine: AsyncEngine) -> None:
    poll_id = await _poll(migrated_engine)
    rows = [{k: v for k, v in row.items() if k != "amount"} for row in _versions(poll_id, 2)]
    async with migrated_engine.begin() as conn:
        columns = list(_versions(poll_id, 1)[0])
        assert await insert_rows(conn, AllowanceVersion, columns, iter(())) == 0  # no error
        with pytest.raises(Exception, match="amount"):
            await insert_rows(conn, AllowanceVersion, *_bulk(rows))
