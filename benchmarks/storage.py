"""What a poll writes: rows (per table, by statement), and bytes on SQLite and PostgreSQL.

- Rows: an engine listener sees every statement the store executes and counts the rows it
  inserted, updated or deleted, per table; row counts before and after cross-check inserts.
- Bytes, SQLite: the database file after a WAL checkpoint (page-granular), and the payload
  of every table and index from ``dbstat``.
- Bytes, PostgreSQL: ``pg_total_relation_size`` of the tables (heap, indexes, TOAST;
  page-granular).
- The floor for a poll's changes: the changed values written with one bare ``executemany``
  into a table without indexes, measured the same way, and the CPU seconds of that
  ``executemany`` and its commit in this process (``time.process_time``; for PostgreSQL the
  client's side only, as for the monitor).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

TABLES = (
    "polls",
    "poll_scopes",
    "allowance_versions",
    "balance_versions",
    "change_events",
    "findings",
    "tokens",
)
POLL_RECORD_TABLES = ("polls", "poll_scopes")
FloorRow = tuple[int, str, str, str, str]
"""(chain_id, wallet, token, spender or "", amount as decimal text)."""

_STATEMENT = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)\"?", re.IGNORECASE)


class RowCounter:
    """Counts rows written by every statement an engine executes, per (verb, table)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        event.listen(engine.sync_engine, "after_cursor_execute", self._after)

    def _after(
        self,
        _conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        match = _STATEMENT.match(statement)
        if match is None:
            return
        verb = match.group(1).split()[0].lower()
        table = match.group(2).lower()
        rowcount = getattr(cursor, "rowcount", -1)
        if verb == "insert" and executemany and parameters and _is_flat(parameters):
            # SQLAlchemy's "insertmanyvalues" (INSERT ... VALUES (...), (...) RETURNING):
            # one statement whose parameters are every row's, flattened.
            rows = statement.partition(" VALUES ")[2].count("), (") + 1
        elif verb == "insert":
            rows = len(parameters) if executemany else (rowcount if rowcount >= 0 else 1)
        elif rowcount >= 0:
            rows = rowcount
        else:  # asyncpg reports no rowcount for executemany: one row per parameter set
            rows = len(parameters) if executemany else 0
        self.counts[(verb, table)] += rows

    def take(self) -> Counter[tuple[str, str]]:
        counts, self.counts = self.counts, Counter()
        return counts


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """The database at one moment."""

    bytes_on_disk: int
    payload_bytes: int | None  # SQLite's dbstat payload of the monitor's tables and indexes
    rows: dict[str, int] = field(default_factory=dict)
    measure_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FloorWrite:
    """The floor's bare ``executemany`` of a poll's changed values."""

    bytes_on_disk: int
    payload_bytes: int | None
    cpu_s: float


class Probe:
    """Measures one database between polls (never during one)."""

    backend: str

    def sizes(self) -> Sizes:
        raise NotImplementedError

    def floor_write(self, rows: Sequence[FloorRow]) -> FloorWrite:
        """Bytes on disk (and payload) of ``rows`` written with one bare ``executemany``, and
        the CPU it took."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SqliteProbe(Probe):
    backend = "sqlite"

    def __init__(self, path: Path, scratch: Path) -> None:
        self._path = path
        self._scratch = scratch
        self._dbstat: bool | None = None

    @contextlib.contextmanager
    def _connect(self, path: Path) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def sizes(self) -> Sizes:
        started = time.perf_counter()
        with self._connect(self._path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            on_disk = os.path.getsize(self._path)
            wal = self._path.with_name(self._path.name + "-wal")
            if wal.exists():
                on_disk += os.path.getsize(wal)
            payload = self._payload(conn)
            rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # noqa: S608
        return Sizes(
            bytes_on_disk=on_disk,
            payload_bytes=payload,
            rows=rows,
            measure_s=time.perf_counter() - started,
        )

    def _payload(self, conn: sqlite3.Connection) -> int | None:
        if self._dbstat is False:
            return None
        try:
            found = conn.execute(
                "SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"
            ).fetchall()
            names = [name for name, table in found if table in TABLES]
            marks = ",".join("?" * len(names))
            total = conn.execute(
                f"SELECT sum(payload) FROM dbstat WHERE aggregate = TRUE AND name IN ({marks})",  # noqa: S608
                names,
            ).fetchone()[0]
        except sqlite3.OperationalError:
            self._dbstat = False
            return None
        self._dbstat = True
        return int(total or 0)

    def floor_write(self, rows: Sequence[FloorRow]) -> FloorWrite:
        self._scratch.unlink(missing_ok=True)
        with self._connect(self._scratch) as conn:
            conn.execute(
                "CREATE TABLE floor (chain_id INTEGER, wallet TEXT, token TEXT, spender TEXT, "
                "amount TEXT)"
            )
            empty = os.path.getsize(self._scratch)
            started = time.process_time()
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO floor VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
            cpu_s = time.process_time() - started
            grown = os.path.getsize(self._scratch) - empty
            payload = None
            if self._dbstat is not False:
                try:
                    payload = int(
                        conn.execute(
                            "SELECT sum(payload) FROM dbstat "
                            "WHERE aggregate = TRUE AND name = 'floor'"
                        ).fetchone()[0]
                        or 0
                    )
                except sqlite3.OperationalError:  # built without dbstat
                    self._dbstat = False
        self._scratch.unlink(missing_ok=True)
        return FloorWrite(bytes_on_disk=grown, payload_bytes=payload, cpu_s=cpu_s)


class PostgresProbe(Probe):
    backend = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        parsed = make_url(url)
        self._conn = psycopg.connect(
            host=parsed.host or "127.0.0.1",
            port=parsed.port or 5432,
            user=parsed.username or "postgres",
            password=parsed.password,
            dbname=parsed.database,
            autocommit=True,
        )

    def sizes(self) -> Sizes:
        started = time.perf_counter()
        on_disk = 0
        rows = {}
        for table in TABLES:
            cur = self._conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,))
            on_disk += int(cur.fetchone()[0])  # type: ignore[index]
            cur = self._conn.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
            rows[table] = int(cur.fetchone()[0])  # type: ignore[index]
        return Sizes(
            bytes_on_disk=on_disk,
            payload_bytes=None,
            rows=rows,
            measure_s=time.perf_counter() - started,
        )

    def floor_write(self, rows: Sequence[FloorRow]) -> FloorWrite:
        self._conn.execute("DROP TABLE IF EXISTS bench_floor")
        self._conn.execute(
            "CREATE TABLE bench_floor (chain_id integer, wallet text, token text, "
            "spender text, amount numeric(78, 0))"
        )
        started = time.process_time()
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO bench_floor VALUES (%s, %s, %s, %s, %s::numeric)", list(rows)
            )
        cpu_s = time.process_time() - started
        cur2 = self._conn.execute("SELECT pg_total_relation_size('bench_floor')")
        grown = int(cur2.fetchone()[0])  # type: ignore[index]
        self._conn.execute("DROP TABLE bench_floor")
        return FloorWrite(bytes_on_disk=grown, payload_bytes=None, cpu_s=cpu_s)

    def close(self) -> None:
        self._conn.close()


def _is_flat(parameters: Any) -> bool:
    """Parameters of one multi-row statement (scalars), not a list of rows (tuples, dicts)."""
    return not isinstance(parameters[0], tuple | list | dict)


def make_probe(spec: dict[str, Any]) -> Probe:
    """The probe of a worker's database (``spec``: the worker's, or ``Database.spec()``)."""
    if spec["backend"] == "sqlite":
        path = Path(spec["sqlite_path"])
        return SqliteProbe(path, path.with_name("floor-scratch.sqlite"))
    return PostgresProbe(spec["db_url"])
