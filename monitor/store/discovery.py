"""What chain discovery has scanned and found, in SQL (SQLite or PostgreSQL).

- A cursor per (chain, wallet): the next block to scan. Every block below it, from the
  configured ``start_block`` on, has been scanned; a cursor only moves forward.
- A row per (chain, wallet, token, spender) that some ERC-20 ``Approval`` log named: its
  first and newest log's blocks and the newest one's block time. Never a log's value: the
  live ``allowance()`` is the truth (a ``transferFrom`` lowers it without any log), and a log
  undone by a reorg can at worst leave a pair whose live allowance reads zero.
- A count per chain of ERC-721 approvals (four-topic ``Approval`` logs) seen.

A scan chunk is saved in one transaction (``save_chunk``): the pairs it found and the cursors
past it commit together, so that a scan interrupted anywhere resumes without a gap and
without counting a block twice.

This module takes the approvals as any object with ``owner``, ``token``, ``spender`` and
``block_number`` (``monitor.chain.abi.ApprovalLog`` is one), so that the store does not
depend on the chain adapters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from monitor.ports import Clock, utc_now
from monitor.store.migrate import store_error
from monitor.store.schema import (
    DiscoveredApprovalRow,
    DiscoveryCursor,
    DiscoveryNftCount,
    SpenderCode,
)

DATABASE_ERRORS = (SQLAlchemyError, OSError)

WRITE_CHUNK = 5_000
"""Rows per statement, so that a large chunk binds its parameters a piece at a time."""


class ApprovalRecord(Protocol):
    """An ERC-20 ``Approval`` log as far as the store needs it (addresses lowercase)."""

    @property
    def owner(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def spender(self) -> str: ...
    @property
    def block_number(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveredApproval:
    """A (wallet, token, spender) pair named by at least one ``Approval`` log."""

    chain_id: int
    wallet: str
    token: str
    spender: str
    first_block: int
    last_block: int
    """The block of the pair's newest ``Approval`` log."""
    last_approved_at: datetime
    """The block time of ``last_block`` (UTC): when the pair was last approved."""


class SqlDiscoveryStore:
    """Discovery's cursors and findings, over the same engine as ``SqlSnapshotStore``."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def cursors(
        self, chain_id: int, wallets: Sequence[str], *, start_block: int
    ) -> dict[str, int]:
        """The next block to scan for each of ``wallets`` (keys lowercase): its stored cursor,
        or ``start_block`` for a wallet never scanned or scanned only below it."""
        wanted = sorted({w.lower() for w in wallets})
        stored: dict[str, int] = {}
        try:
            async with self._engine.connect() as conn:
                for start in range(0, len(wanted), WRITE_CHUNK):
                    part = wanted[start : start + WRITE_CHUNK]
                    rows = await conn.execute(
                        select(DiscoveryCursor.wallet, DiscoveryCursor.next_block).where(
                            DiscoveryCursor.chain_id == chain_id,
                            DiscoveryCursor.wallet.in_(part),
                        )
                    )
                    stored.update({wallet: int(block) for wallet, block in rows})
        except DATABASE_ERRORS as exc:
            raise store_error(
                self._engine, f"read the discovery cursors of chain {chain_id}", exc
            ) from exc
        return {w: max(stored.get(w, start_block), start_block) for w in wanted}

    async def save_chunk(
        self,
        chain_id: int,
        *,
        cursors: Mapping[str, int],
        approvals: Sequence[ApprovalRecord],
        block_times: Mapping[int, int],
        nft_approvals: int = 0,
    ) -> None:
        """Record one scanned chunk in one transaction: the pairs its ``approvals`` name, the
        wallets' new ``cursors`` (next block to scan) and its ``nft_approvals`` count.

        ``block_times`` maps block numbers to unix seconds; it must hold the block of each
        pair's newest approval in the chunk. A pair's newest block and time and a wallet's
        cursor only move forward: saving an older chunk again changes neither.
        """
        now = self._clock()
        pairs: dict[tuple[str, str, str], tuple[int, int]] = {}
        for approval in approvals:
            key = (approval.owner.lower(), approval.token.lower(), approval.spender.lower())
            block = approval.block_number
            first, last = pairs.get(key, (block, block))
            pairs[key] = (min(first, block), max(last, block))
        approval_rows: list[dict[str, Any]] = []
        for (wallet, token, spender), (first, last) in pairs.items():
            if last not in block_times:
                raise ValueError(
                    f"no block time for block {last} of the approval of {token} by {wallet} "
                    f"to {spender} on chain {chain_id}"
                )
            approval_rows.append(
                {
                    "chain_id": chain_id,
                    "wallet": wallet,
                    "token": token,
                    "spender": spender,
                    "first_block": first,
                    "last_block": last,
                    "last_approved_at": datetime.fromtimestamp(block_times[last], UTC),
                    "discovered_at": now,
                }
            )
        cursor_rows = [
            {"chain_id": chain_id, "wallet": w.lower(), "next_block": b, "updated_at": now}
            for w, b in sorted(cursors.items())
        ]
        try:
            async with self._engine.begin() as conn:
                await _upsert_approvals(conn, approval_rows)
                await _upsert_cursors(conn, cursor_rows)
                if nft_approvals:
                    await _add_nft_approvals(conn, chain_id, nft_approvals, now)
        except DATABASE_ERRORS as exc:
            raise store_error(
                self._engine, f"save a discovery chunk of chain {chain_id}", exc
            ) from exc

    async def discovered(self, chain_id: int) -> list[DiscoveredApproval]:
        """Every pair discovered on ``chain_id``, by wallet, token and spender."""
        t = DiscoveredApprovalRow
        try:
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    select(
                        t.wallet,
                        t.token,
                        t.spender,
                        t.first_block,
                        t.last_block,
                        t.last_approved_at,
                    )
                    .where(t.chain_id == chain_id)
                    .order_by(t.wallet, t.token, t.spender)
                )
                return [
                    DiscoveredApproval(
                        chain_id=chain_id,
                        wallet=row.wallet,
                        token=row.token,
                        spender=row.spender,
                        first_block=int(row.first_block),
                        last_block=int(row.last_block),
                        last_approved_at=row.last_approved_at,
                    )
                    for row in rows
                ]
        except DATABASE_ERRORS as exc:
            raise store_error(
                self._engine, f"read the discovered approvals of chain {chain_id}", exc
            ) from exc

    async def discovered_marker(self, chain_id: int) -> tuple[int, int]:
        """Moves whenever a pair is added or approved again on ``chain_id``, by this process
        or another: (pairs, sum of their last blocks; a last block only moves forward).
        Cheap next to reading every pair, so a reader can keep its copy until it moves."""
        t = DiscoveredApprovalRow
        try:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(func.count(), func.sum(t.last_block)).where(t.chain_id == chain_id)
                    )
                ).one()
        except DATABASE_ERRORS as exc:
            raise store_error(
                self._engine, f"read the discovered approvals of chain {chain_id}", exc
            ) from exc
        return int(row[0]), int(row[1] or 0)

    async def nft_approvals(self, chain_id: int) -> int:
        """How many ERC-721 ``Approval`` logs discovery has seen on ``chain_id``."""
        try:
            async with self._engine.connect() as conn:
                count = await conn.scalar(
                    select(DiscoveryNftCount.nft_approvals).where(
                        DiscoveryNftCount.chain_id == chain_id
                    )
                )
        except DATABASE_ERRORS as exc:
            raise store_error(
                self._engine, f"read the NFT approval count of chain {chain_id}", exc
            ) from exc
        return int(count or 0)

    async def save_spender_code(self, chain_id: int, has_code: Mapping[str, bool]) -> None:
        """Record whether each spender has contract code (as read now)."""
        if not has_code:
            return
        now = self._clock()
        rows = [
            {"chain_id": chain_id, "spender": s.lower(), "has_code": h, "checked_at": now}
            for s, h in sorted(has_code.items())
        ]
        try:
            async with self._engine.begin() as conn:
                t = SpenderCode.__table__.c
                statement = _dialect_insert(conn)(SpenderCode)
                statement = statement.on_conflict_do_update(
                    index_elements=[t.chain_id, t.spender],
                    set_={
                        "has_code": statement.excluded.has_code,
                        "checked_at": statement.excluded.checked_at,
                    },
                )
                for start in range(0, len(rows), WRITE_CHUNK):
                    await conn.execute(statement, rows[start : start + WRITE_CHUNK])
        except DATABASE_ERRORS as exc:
            raise store_error(
                self._engine, f"save spender code facts of chain {chain_id}", exc
            ) from exc

    async def spender_code(self, chain_id: int) -> dict[str, bool]:
        """Whether each spender checked on ``chain_id`` had contract code when last read."""
        try:
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    select(SpenderCode.spender, SpenderCode.has_code).where(
                        SpenderCode.chain_id == chain_id
                    )
                )
                return {spender: bool(has) for spender, has in rows}
        except DATABASE_ERRORS as exc:
            raise store_error(
                self._engine, f"read spender code facts of chain {chain_id}", exc
            ) from exc


def _dialect_insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def _upsert_approvals(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    t = DiscoveredApprovalRow.__table__.c
    statement = _dialect_insert(conn)(DiscoveredApprovalRow)
    new = statement.excluded
    newer = new.last_block > t.last_block
    statement = statement.on_conflict_do_update(
        index_elements=[t.chain_id, t.wallet, t.token, t.spender],
        set_={
            "first_block": case(
                (new.first_block < t.first_block, new.first_block), else_=t.first_block
            ),
            "last_block": case((newer, new.last_block), else_=t.last_block),
            "last_approved_at": case((newer, new.last_approved_at), else_=t.last_approved_at),
        },
    )
    for start in range(0, len(rows), WRITE_CHUNK):
        await conn.execute(statement, rows[start : start + WRITE_CHUNK])


async def _upsert_cursors(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    t = DiscoveryCursor.__table__.c
    statement = _dialect_insert(conn)(DiscoveryCursor)
    new = statement.excluded
    forward = new.next_block > t.next_block
    statement = statement.on_conflict_do_update(
        index_elements=[t.chain_id, t.wallet],
        set_={
            "next_block": case((forward, new.next_block), else_=t.next_block),
            "updated_at": case((forward, new.updated_at), else_=t.updated_at),
        },
    )
    for start in range(0, len(rows), WRITE_CHUNK):
        await conn.execute(statement, rows[start : start + WRITE_CHUNK])


async def _add_nft_approvals(
    conn: AsyncConnection, chain_id: int, count: int, now: datetime
) -> None:
    t = DiscoveryNftCount.__table__.c
    statement = _dialect_insert(conn)(DiscoveryNftCount).values(
        chain_id=chain_id, nft_approvals=count, updated_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[t.chain_id],
        set_={
            "nft_approvals": t.nft_approvals + statement.excluded.nft_approvals,
            "updated_at": statement.excluded.updated_at,
        },
    )
    await conn.execute(statement)
