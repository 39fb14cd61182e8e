"""Building poll results by hand for store tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.domain.model import BatchOutcome, PollResult, Position, Token
from monitor.store.schema import (
    AllowanceVersion,
    BalanceVersion,
    ChangeEventRow,
    Poll,
    PollScope,
    TokenRow,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W1, W2 = "0x" + "a1" * 20, "0x" + "b2" * 20
S1, S2 = "0x" + "c3" * 20, "0x" + "d4" * 20
TK1, TK2 = "0x" + "01" * 20, "0x" + "02" * 20


def token(address: str = TK1, symbol: str = "TK", decimals: int | None = 18) -> Token:
    return Token(chain_id=1, address=address, symbol=symbol, name=symbol, decimals=decimals)


def pos(
    wallet: str, tok: str, spender: str, balance: int, allowance: int, symbol: str = "TK"
) -> Position:
    return Position(
        chain_id=1,
        wallet=wallet,
        spender=spender,
        token=token(tok, symbol),
        balance=balance,
        allowance=allowance,
    )


def batch(
    spender: str,
    wallets: tuple[str, ...],
    positions: list[Position],
    *,
    failed: bool = False,
    rid: str = "rid",
    digest: bytes | None = None,
) -> BatchOutcome:
    return BatchOutcome(
        chain_id=1,
        spender=spender,
        wallets=wallets,
        kind="aggregated",
        positions=() if failed else tuple(positions),
        request_id=rid,
        error="aggregated: server error | HTTP 503" if failed else None,
        error_reason="unavailable" if failed else None,
        answer_digest=digest,
    )


def poll(minute: int, *batches: BatchOutcome) -> PollResult:
    at = T0 + timedelta(minutes=minute)
    return PollResult(started_at=at - timedelta(seconds=5), finished_at=at, batches=batches)


async def count(engine: AsyncEngine, table: type) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def clear(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in (ChangeEventRow, AllowanceVersion, BalanceVersion, PollScope, TokenRow, Poll):
            await conn.execute(delete(table))
