"""Creating the async engine, with the SQLite settings a long-running writer needs."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` (``sqlite+aiosqlite://``, ``postgresql+asyncpg://`` or
    ``postgresql+psycopg://``). SQLite gets WAL journaling, a busy timeout and foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # The busy timeout first: switching to WAL takes a lock, and without a timeout a
        # connection that meets another's lock fails at once ("database is locked").
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if not _is_memory(dbapi_connection):
            _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


WAL_ATTEMPTS = 100


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, again if need be: connections that switch a new database
    at the same moment can deadlock on its lock, and SQLite then answers one of them
    "database is locked" at once, busy timeout or not (seen with two processes starting on a
    new file). Once one has switched, the mode is stored in the file and the others succeed."""
    for attempt in range(1, WAL_ATTEMPTS + 1):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_ATTEMPTS:
                raise
            time.sleep(0.01)  # in the driver's thread, never the event loop's


def _is_memory(dbapi_connection: Any) -> bool:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA database_list")
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return any(row[1] == "main" and not row[2] for row in rows)
