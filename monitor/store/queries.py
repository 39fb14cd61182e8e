"""Reading stored history: the latest value of every key at or before a poll, and tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.domain.model import Token
from monitor.domain.records import StoredEvent
from monitor.domain.snapshot import (
    EMPTY_SNAPSHOT,
    AllowanceKey,
    BalanceKey,
    Change,
    ChangeEvent,
    Snapshot,
)
from monitor.store.schema import AllowanceVersion, BalanceVersion, Poll, PollScope, TokenRow


async def latest_snapshot(conn: AsyncConnection) -> Snapshot:
    head = await conn.scalar(select(func.max(Poll.id)))
    return EMPTY_SNAPSHOT if head is None else await snapshot_at_poll(conn, head)


STREAM_CHUNK_ROWS = 5_000
"""Rows converted per step when a snapshot is read: the event loop serves scrapes and health
checks between steps, instead of waiting for 400,000 values at once (about 2 s)."""


async def snapshot_at_poll(conn: AsyncConnection, poll_id: int) -> Snapshot:
    # The driver makes a new string for every address of every row; a few thousand distinct
    # addresses are shared instead (at 408,000 values, about 100 MiB less for as long as the
    # snapshot lives: the whole life of a daemon's cache).
    shared: dict[str, str] = {}
    same = shared.setdefault
    allowances: dict[AllowanceKey, int] = {}
    async for rows in latest_versions(
        conn, AllowanceVersion, ("chain_id", "wallet", "token", "spender"), poll_id
    ):
        for chain_id, wallet, token, spender, amount in rows:
            if amount:
                key = (chain_id, same(wallet, wallet), same(token, token), same(spender, spender))
                allowances[key] = amount
    balances: dict[BalanceKey, int] = {}
    async for rows in latest_versions(
        conn, BalanceVersion, ("chain_id", "wallet", "token"), poll_id
    ):
        for chain_id, wallet, token, amount in rows:
            if amount:
                balances[(chain_id, same(wallet, wallet), same(token, token))] = amount
    return Snapshot(allowances=allowances, balances=balances)


async def latest_versions(
    conn: AsyncConnection,
    table: type[AllowanceVersion] | type[BalanceVersion],
    key_columns: Sequence[str],
    poll_id: int,
) -> AsyncIterator[Sequence[Any]]:
    """The latest version of every key at or before ``poll_id``, in chunks of rows (streamed:
    each chunk is fetched with an await, so the loop runs between them)."""
    keys = [getattr(table, c) for c in key_columns]
    if conn.dialect.name == "sqlite":
        # SQLite documents that with max() in an aggregate, its bare columns come from the
        # row holding the maximum: one pass over the primary key's order, where the window
        # function below sorts every key's versions again (1.17 s against 0.60 s of SQLite's
        # CPU for 300,000 allowances).
        latest = (
            select(*keys, table.amount, func.max(table.poll_id).label("at"))
            .where(table.poll_id <= poll_id)
            .group_by(*keys)
            .subquery()
        )
        query = select(*(latest.c[c] for c in key_columns), latest.c.amount)
    else:
        ranked = (
            select(
                *keys,
                table.amount,
                func.row_number()
                .over(partition_by=keys, order_by=table.poll_id.desc())
                .label("rank"),
            )
            .where(table.poll_id <= poll_id)
            .subquery()
        )
        query = select(*(ranked.c[c] for c in key_columns), ranked.c.amount).where(
            ranked.c.rank == 1
        )
    result = await conn.stream(query)
    async for rows in result.partitions(STREAM_CHUNK_ROWS):
        yield rows


async def load_tokens(
    conn: AsyncConnection,
) -> dict[tuple[int, str], tuple[str, str, int | None, str]]:
    rows = (await conn.execute(select(TokenRow))).all()
    return {(r.chain_id, r.address): (r.symbol, r.name, r.decimals, r.tags) for r in rows}


async def tokens_of(conn: AsyncConnection, snapshot: Snapshot) -> dict[tuple[int, str], Token]:
    wanted = {(k[0], k[2]) for k in snapshot.allowances} | {(k[0], k[2]) for k in snapshot.balances}
    known = await load_tokens(conn)
    return {key: token_of(key, known[key]) for key in wanted if key in known}


def token_of(key: tuple[int, str], values: tuple[str, str, int | None, str]) -> Token:
    symbol, name, decimals, tags = values
    return Token(
        chain_id=key[0],
        address=key[1],
        symbol=symbol,
        name=name,
        decimals=decimals,
        tags=tuple(tags.split()),
    )


async def last_successes(conn: AsyncConnection) -> dict[tuple[int, str], datetime]:
    """Per (chain_id, spender): when a poll last observed every batch of it."""
    query = (
        select(PollScope.chain_id, PollScope.spender, func.max(Poll.finished_at))
        .join(Poll, Poll.id == PollScope.poll_id)
        .where(PollScope.batches_failed == 0)
        .group_by(PollScope.chain_id, PollScope.spender)
    )
    return {(chain_id, spender): at for chain_id, spender, at in (await conn.execute(query)).all()}


async def upstream_status(conn: AsyncConnection) -> dict[int, bool]:
    """Per chain: did every batch of the newest poll with any batch succeed."""
    newest = await conn.scalar(select(func.max(PollScope.poll_id)))
    if newest is None:
        return {}
    status: dict[int, bool] = {}
    rows = await conn.execute(
        select(PollScope.chain_id, PollScope.batches_failed).where(PollScope.poll_id == newest)
    )
    for chain_id, failed in rows.all():
        status[chain_id] = status.get(chain_id, True) and failed == 0
    return status


@dataclass(frozen=True, slots=True, kw_only=True)
class PollMark:
    """A poll, and when it finished: what it observed stands as of then."""

    poll_id: int
    finished_at: datetime


async def first_observing_poll(conn: AsyncConnection) -> PollMark | None:
    """The first poll recorded that observed anything, one with a successful batch: before it
    the store knows nothing. First by id, which is the order polls were recorded in (each
    takes the write lock before its id): the baseline is the poll that found the store empty,
    even should another that finished earlier have been recorded after it."""
    row = (
        await conn.execute(
            select(Poll.id, Poll.finished_at)
            .where(Poll.outcome != "failed")
            .order_by(Poll.id)
            .limit(1)
        )
    ).first()
    return None if row is None else PollMark(poll_id=row.id, finished_at=row.finished_at)


async def first_observations(
    conn: AsyncConnection,
    baseline: PollMark,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    chain_id: int | None = None,
    wallet: str | None = None,
    spender: str | None = None,
    changes: Sequence[Change] | None = None,
) -> list[StoredEvent]:
    """The baseline poll's events, read from its versions: each non-zero value it holds was
    first observed then (0 -> value), filtered as ``SqlSnapshotStore.events`` filters, in the
    order the poll's diff lists them (allowances, then balances, each by key).

    A baseline is stored once, as values: after a prune its values are every key's value at
    the cutoff, so replaying every event from an empty snapshot still gives the latest one.
    """
    at = baseline.finished_at
    if (since is not None and at < since) or (until is not None and at > until):
        return []
    found: list[StoredEvent] = []
    tables: tuple[tuple[type[AllowanceVersion] | type[BalanceVersion], Change], ...] = (
        (AllowanceVersion, Change.GRANTED),  # what classify(0, value) says
        (BalanceVersion, Change.BALANCE_CHANGED),
    )
    for table, kind in tables:
        if changes is not None and kind not in changes:
            continue
        if table is BalanceVersion and spender is not None:
            continue  # a balance has no spender
        keys: list[Any] = [table.chain_id, table.wallet, table.token]
        if table is AllowanceVersion:
            keys.append(AllowanceVersion.spender)
        query = select(*keys, table.amount).where(
            table.poll_id == baseline.poll_id, table.amount != 0
        )
        if chain_id is not None:
            query = query.where(table.chain_id == chain_id)
        if wallet is not None:
            query = query.where(table.wallet == wallet)
        if spender is not None:
            query = query.where(AllowanceVersion.spender == spender)
        for row in (await conn.execute(query.order_by(*keys))).all():
            found.append(
                StoredEvent(
                    poll_id=baseline.poll_id,
                    observed_at=at,
                    event=ChangeEvent(
                        chain_id=row.chain_id,
                        wallet=row.wallet,
                        token=row.token,
                        spender=row.spender if len(keys) == 4 else None,
                        change=kind,
                        old=0,
                        new=row.amount,
                    ),
                )
            )
    return found
