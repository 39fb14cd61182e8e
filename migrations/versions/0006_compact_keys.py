"""Addresses as their 20 bytes, SQLite amounts as length-prefixed bytes, no ``opened_at`` index.

Every address column held ``0x`` and 40 hex digits as text (43 bytes a copy); it holds the
address's 20 bytes now (``BLOB`` on SQLite, ``bytea`` on PostgreSQL), in each table and in
each index that repeats it. On SQLite an amount was 78 zero-padded digits of text; it is now a
blob: one byte counting the big-endian bytes that follow, without leading zeros (2^256-1 takes
33 bytes, a typical balance 9 to 12), whose bytewise order is numeric order, as the text's was.
PostgreSQL keeps ``NUMERIC(78, 0)``. ``ix_findings_opened_at`` served no query: ``findings``
sorts every row it lists, and nothing else reads by that column. At 306,000 positions and
266,000 findings this takes a first poll's database from 231 MB to about 120 MB.

The values are converted, never dropped: PostgreSQL converts in place (``decode``); SQLite,
which cannot, recreates each table (Alembic's batch mode) and converts its rows in Python.
A value that is not an address (or not an amount) stops the migration, which is then rolled
back whole. The downgrade converts back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADDRESSES: dict[str, tuple[str, ...]] = {
    "poll_scopes": ("spender",),
    "tokens": ("address",),
    "allowance_versions": ("wallet", "token", "spender"),
    "balance_versions": ("wallet", "token"),
    "change_events": ("wallet", "token", "spender"),
    "findings": ("wallet", "spender", "token"),
    "discovery_cursors": ("wallet",),
    "discovered_approvals": ("wallet", "token", "spender"),
    "spender_code": ("spender",),
}
"""Every address column, by table."""

AMOUNTS: dict[str, tuple[str, ...]] = {
    "allowance_versions": ("amount",),
    "balance_versions": ("amount",),
    "change_events": ("old", "new"),
}
"""Every amount column, by table."""

UINT256_MAX = 2**256 - 1
CHUNK = 20_000
"""Rows converted per statement on SQLite."""


def _sqlite_check(column: str) -> str:
    return (
        f"typeof({column}) = 'blob' AND length({column}) BETWEEN 1 AND 33 "
        f"AND hex(substr({column}, 1, 1)) = printf('%02X', length({column}) - 1) "
        f"AND (length({column}) = 1 OR substr({column}, 2, 1) != x'00')"
    )


def _old_sqlite_check(column: str) -> str:
    return (
        f"length({column}) = 78 AND {column} NOT GLOB '*[^0-9]*' "
        f"AND {column} <= '{UINT256_MAX:078d}'"
    )


def _text(value: object) -> str:
    """A column's old value, read as the bytes of its text."""
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _address_bytes(value: object) -> bytes:
    text = _text(value)
    if not text:
        return b""
    try:
        raw = bytes.fromhex(text[2:]) if len(text) == 42 and text[:2] in ("0x", "0X") else b""
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise ValueError(f"not an address: {text[:50]!r}")
    return raw


def _address_text(value: object) -> str:
    raw = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""
    return "0x" + raw.hex() if raw else ""


def _amount_bytes(value: object) -> bytes:
    number = int(_text(value))
    if not 0 <= number <= UINT256_MAX:
        raise ValueError(f"outside 0..2^256-1: {number}")
    length = (number.bit_length() + 7) >> 3
    return bytes((length,)) + number.to_bytes(length, "big")


def _amount_text(value: object) -> str:
    raw = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""
    return f"{int.from_bytes(raw[1:], 'big'):078d}"


def _convert_sqlite_rows(table: str, converters: dict[str, Callable[[object], Any]]) -> None:
    """Rewrite every row's ``converters`` columns in place, ``CHUNK`` rows at a time."""
    bind = op.get_bind()
    columns = list(converters)
    # Read as bytes whatever the column holds now (text decodes to nothing else).
    read = ", ".join(f"CAST({c} AS BLOB)" for c in columns)
    # Table and column names are this module's constants, never input.
    select = sa.text(
        f"SELECT rowid, {read} FROM {table} "  # noqa: S608
        "WHERE rowid > :last ORDER BY rowid LIMIT :chunk"
    )
    assignments = ", ".join(f"{c} = :{c}" for c in columns)
    update = sa.text(f"UPDATE {table} SET {assignments} WHERE rowid = :rowid")  # noqa: S608

    def convert(column: str, value: object) -> Any:
        try:
            return None if value is None else converters[column](value)
        except ValueError as exc:
            raise CommandError(
                f"table {table}, column {column}: a stored value is {exc}; nothing was migrated"
            ) from None

    last = -1
    while True:
        rows = bind.execute(select, {"last": last, "chunk": CHUNK}).all()
        if not rows:
            return
        bind.execute(
            update,
            [
                {
                    "rowid": row[0],
                    **{c: convert(c, v) for c, v in zip(columns, row[1:], strict=True)},
                }
                for row in rows
            ],
        )
        last = rows[-1][0]


def _sqlite(*, upgrade: bool) -> None:
    address: Callable[[object], Any]
    amount: Callable[[object], Any]
    if upgrade:
        address_type: sa.types.TypeEngine[Any] = sa.LargeBinary(20)
        amount_type: sa.types.TypeEngine[Any] = sa.LargeBinary(33)
        address, amount, check = _address_bytes, _amount_bytes, _sqlite_check
        old_address: sa.types.TypeEngine[Any] = sa.String(42)
        old_amount: sa.types.TypeEngine[Any] = sa.String(78)
    else:
        address_type, amount_type = sa.String(42), sa.String(78)
        address, amount, check = _address_text, _amount_text, _old_sqlite_check
        old_address, old_amount = sa.LargeBinary(20), sa.LargeBinary(33)
    for table, addresses in ADDRESSES.items():
        amounts = AMOUNTS.get(table, ())
        # The old CHECKs would refuse the new values: off while the rows are rewritten.
        with op.batch_alter_table(table, recreate="always") as batch:
            for column in amounts:
                batch.drop_constraint(op.f(f"ck_{table}_{column}_uint256_sqlite"), type_="check")
                batch.alter_column(column, type_=amount_type, existing_type=old_amount)
            for column in addresses:
                batch.alter_column(column, type_=address_type, existing_type=old_address)
        _convert_sqlite_rows(
            table, {**dict.fromkeys(addresses, address), **dict.fromkeys(amounts, amount)}
        )
        if amounts:
            with op.batch_alter_table(table, recreate="always") as batch:
                for column in amounts:
                    batch.create_check_constraint(f"{column}_uint256_sqlite", check(column))


def _postgresql(*, upgrade: bool) -> None:
    bind = op.get_bind()
    for table, addresses in ADDRESSES.items():
        if upgrade:
            for column in addresses:
                bad = bind.execute(
                    sa.text(
                        f"SELECT {column} FROM {table} "  # noqa: S608 (constants)
                        f"WHERE {column} !~ '^(0[xX][0-9a-fA-F]{{40}})?$' LIMIT 1"
                    )
                ).scalar()
                if bad is not None:
                    raise CommandError(
                        f"table {table}, column {column}: a stored value is not an address: "
                        f"{bad[:50]!r}; nothing was migrated"
                    )
            changes = [
                f"ALTER COLUMN {c} TYPE bytea USING decode(substr({c}, 3), 'hex')"
                for c in addresses
            ]
        else:
            changes = [
                f"ALTER COLUMN {c} TYPE VARCHAR(42) USING "
                f"CASE WHEN length({c}) = 0 THEN '' ELSE '0x' || encode({c}, 'hex') END"
                for c in addresses
            ]
        op.execute(f"ALTER TABLE {table} {', '.join(changes)}")


def upgrade() -> None:
    op.drop_index("ix_findings_opened_at", table_name="findings")
    if op.get_bind().dialect.name == "sqlite":
        _sqlite(upgrade=True)
    else:
        _postgresql(upgrade=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite(upgrade=False)
    else:
        _postgresql(upgrade=False)
    op.create_index("ix_findings_opened_at", "findings", ["opened_at"])
