"""Bulk inserts without SQLAlchemy's per-row statement machinery.

``conn.execute(insert(table), rows)`` builds a parameter dictionary for every row and looks up
and applies each column's bind processor through the compiled statement; on a first poll of
300,000 versions and 266,000 findings that per-row work costs more CPU than the database's own.
Here the statement is compiled once for the connection's dialect, each column's processor is
looked up once, and the driver receives the rows already converted, one ``executemany`` a
chunk. What is written is exactly what ``conn.execute`` would write: the same statement text,
the same processors (``monitor.store.types`` included, so every value is checked as before).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import call, itemgetter
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncConnection

CHUNK = 5_000
"""Rows per ``executemany``: each chunk is one await, so that converting the rows of a large
insert (on the event loop) does not hold it for long."""


async def insert_rows(
    conn: AsyncConnection,
    table: Table | Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    chunk: int = CHUNK,
) -> None:
    """Insert ``rows`` (dicts with the same keys, column names of ``table``) into ``table``."""
    if not rows:
        return
    table = getattr(table, "__table__", table)
    names = list(rows[0])
    dialect = conn.dialect
    compiled = insert(table).compile(dialect=dialect, column_keys=names)
    sql = compiled.string
    params = compiled.positiontup if compiled.positional else list(compiled.binds)
    if params is None or sorted(params) != sorted(names):
        raise ValueError(f"{table.name}: the insert binds {params}, the rows hold {names}")
    defaulted = [c.name for c in table.c if c.name not in names and c.default is not None]
    if defaulted:  # conn.execute would fill these in Python; the driver cannot
        raise ValueError(f"{table.name}: rows without {defaulted}, which have Python defaults")
    get = itemgetter(*params) if len(params) > 1 else (lambda row: (row[params[0]],))
    converters = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) or _same for name in params
    ]
    positional = compiled.positional
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        # map(call, converters, values): the loop over the columns runs in C.
        try:
            if positional:
                converted: list[Any] = [tuple(map(call, converters, get(row))) for row in part]
            else:
                converted = [
                    dict(zip(params, map(call, converters, get(row)), strict=True)) for row in part
                ]
        except (ValueError, TypeError) as exc:
            # As conn.execute reports a value it cannot bind: a SQLAlchemy error, which the
            # store turns into its own (the transaction rolls back; nothing is written).
            raise StatementError(str(exc), sql, None, exc) from exc
        await conn.exec_driver_sql(sql, converted)


def _same(value: Any) -> Any:
    return value
