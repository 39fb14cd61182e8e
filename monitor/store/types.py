"""Column types that keep on-chain amounts exact, addresses compact and times in UTC on every
backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, LargeBinary, Numeric
from sqlalchemy.types import TypeDecorator, TypeEngine

from monitor.domain.model import UINT256_MAX

AMOUNT_DIGITS = 78
"""2^256-1 has 78 decimal digits."""


AMOUNT_BYTES = 33
"""The longest stored amount on SQLite: a length byte and 2^256-1's 32 bytes."""

ADDRESS_BYTES = 20


def encode_amount(value: int) -> bytes:
    """SQLite's form of an amount: its length in bytes, then its big-endian bytes without
    leading zeros (0 is one zero byte). Bytewise order is numeric order: a longer value is
    larger, and values of one length compare as their bytes do."""
    length = (value.bit_length() + 7) >> 3
    return bytes((length,)) + value.to_bytes(length, "big")


def decode_amount(value: bytes) -> int:
    return int.from_bytes(value[1:], "big")


class Uint256(TypeDecorator[int]):
    """An integer in 0..2^256-1, exact everywhere, ordered correctly everywhere.

    PostgreSQL: ``NUMERIC(78, 0)`` (a CHECK in the schema refuses 2^256 and negatives).
    SQLite: a BLOB of at most 33 bytes (``encode_amount``), because SQLite's NUMERIC affinity
    turns large integers into 8-byte floats (2^256-1 would come back as 2^256); a CHECK in the
    schema refuses any other shape. Its bytewise order is numeric order, so ``ORDER BY``,
    ``max`` and ``<``/``>`` filters stay right as long as the value compared with is bound
    through this type too. A typical amount takes 9 to 12 bytes (the 78-digit text it
    replaced took 78).
    """

    impl = Numeric(AMOUNT_DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(LargeBinary(AMOUNT_BYTES))
        return dialect.type_descriptor(Numeric(AMOUNT_DIGITS, 0, asdecimal=True))

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        # SQLite: one function a value, as the driver binds bytes itself (a bulk insert binds
        # hundreds of thousands; the generic chain of processors doubled its CPU).
        if dialect.name == "sqlite":
            return _bind_sqlite_amount
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _result_sqlite_amount
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return _bind_sqlite_amount(value)
        if value is None:
            return None
        _check_amount(value)
        return Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if dialect.name == "sqlite":
            return _result_sqlite_amount(value)
        if value is None:
            return None
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise ValueError(f"stored amount {value} is not whole")
            return int(value)
        return int(value)


def _check_amount(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"an amount must be an int, got {type(value).__name__}")
    if not 0 <= value <= UINT256_MAX:
        raise ValueError(f"amount {value} is outside 0..2^256-1")


def _bind_sqlite_amount(value: int | None) -> bytes | None:
    if value is None:
        return None
    _check_amount(value)
    return encode_amount(value)


def _result_sqlite_amount(value: bytes | str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):  # read at revision 0005 or older: 78 digits of text
        return int(value)
    return decode_amount(value)


def address_bytes(value: str) -> bytes:
    """The 20 bytes of ``0x`` and 40 lowercase hex digits (the one spelling the monitor uses
    everywhere); the empty string is empty (a finding about a whole (wallet, spender) pair
    has no token). Anything else is refused: stored, it would come back spelled otherwise."""
    if not value:
        return b""
    if len(value) == 42 and value.startswith("0x") and value.islower():
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raw = b""
        if len(raw) == ADDRESS_BYTES:
            return raw
    raise ValueError(f"not an address (0x and 40 lowercase hex digits): {value[:50]!r}")


def address_text(value: bytes) -> str:
    return "0x" + value.hex() if value else ""


MEMO_LIMIT = 16_384
"""Addresses each memo of ``Address`` keeps before it starts over (a few MB at most)."""

_bytes_of: dict[str, bytes] = {}
_text_of: dict[bytes, str] = {}


def _bind_address(value: str | None) -> bytes | None:
    if value is None:
        return None
    raw = _bytes_of.get(value) if isinstance(value, str) else None
    if raw is None:
        if not isinstance(value, str):
            raise TypeError(f"an address must be a str, got {type(value).__name__}")
        raw = address_bytes(value)
        if len(_bytes_of) >= MEMO_LIMIT:
            _bytes_of.clear()
        _bytes_of[value] = raw
    return raw


def _result_address(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):  # str: read at revision 0005 or older
        return value
    if type(value) is not bytes:
        value = bytes(value)
    text = _text_of.get(value)
    if text is None:
        text = address_text(value)
        if len(_text_of) >= MEMO_LIMIT:
            _text_of.clear()
        _text_of[value] = text
    return text


class Address(TypeDecorator[str]):
    """An EVM address as its 20 bytes (``BLOB`` on SQLite, ``bytea`` on PostgreSQL), half the
    size of its text in every table and index that holds it; the monitor sees the lowercase
    ``0x`` text. Bytewise order is the order of that text.

    A portfolio repeats few addresses in many rows, so both directions are memoized (bounded
    by ``MEMO_LIMIT``): a bulk insert or a restore converts each address once, and every row
    read back shares one string per address. The processors are single functions, as every
    driver here binds and returns ``bytes`` itself (the generic ``TypeDecorator`` chain
    doubled the CPU of a 300,000-row insert)."""

    impl = LargeBinary(ADDRESS_BYTES)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        return _bind_address

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any]:
        return _result_address

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return _bind_address(value)

    def process_result_value(self, value: bytes | str | None, dialect: Dialect) -> str | None:
        return _result_address(value)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` in, the same out, on SQLite as on PostgreSQL.

    A bulk write binds one instant to every row (a first poll opens 266,000 findings at
    ``now``), and SQLite's driver takes text, formatted anew for each row: the bind processor
    remembers the last object it converted and hands back its result when given that very
    object again."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        process = super().bind_processor(dialect)
        if process is None:
            return None
        convert = process
        last: list[tuple[object, Any]] = [(None, None)]

        def bind(value: datetime | None) -> Any:
            seen, bound = last[0]
            if value is seen and value is not None:
                return bound
            bound = convert(value)
            last[0] = (value, bound)  # one assignment: a pair is never torn
            return bound

        return bind

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
