"""Column types that keep on-chain amounts exact and times in UTC on every backend."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine

from monitor.domain.model import UINT256_MAX

AMOUNT_DIGITS = 78
"""2^256-1 has 78 decimal digits."""


class Uint256(TypeDecorator[int]):
    """An integer in 0..2^256-1, exact everywhere, ordered correctly everywhere.

    PostgreSQL: ``NUMERIC(78, 0)`` (a CHECK in the schema refuses 2^256 and negatives).
    SQLite: 78 zero-padded decimal digits in a text column, because SQLite's NUMERIC affinity
    turns large integers into 8-byte floats (2^256-1 would come back as 2^256). Fixed width
    makes text order equal numeric order, so ``ORDER BY`` and ``<``/``>`` filters stay right
    as long as the value compared with is bound through this type too.
    """

    impl = Numeric(AMOUNT_DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(AMOUNT_DIGITS))
        return dialect.type_descriptor(Numeric(AMOUNT_DIGITS, 0, asdecimal=True))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"an amount must be an int, got {type(value).__name__}")
        if not 0 <= value <= UINT256_MAX:
            raise ValueError(f"amount {value} is outside 0..2^256-1")
        if dialect.name == "sqlite":
            return f"{value:0{AMOUNT_DIGITS}d}"
        return Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, str):
            return int(value)
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise ValueError(f"stored amount {value} is not whole")
            return int(value)
        return int(value)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` in, the same out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: pass a UTC-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
