"""Schema migrations: Alembic, driven through our own async connections.

The scripts live in the source tree's top-level ``migrations/`` folder, which installs as the
package ``monitor.migrations``; Alembic is configured here in code and no ``alembic.ini`` is
read at run time. Each function opens a connection on the engine it is given and hands it to
Alembic's ``env.py`` through ``Config.attributes["connection"]``, so the same code runs from
the CLI, inside the daemon's event loop and in tests.

``upgrade`` and ``downgrade`` run in one transaction that shuts out other migrators: on
PostgreSQL it holds the advisory lock ``MIGRATION_LOCK_KEY`` until it commits, on SQLite the
database's write lock (``BEGIN IMMEDIATE``), so instances starting together migrate one after
the other and the later ones find nothing left to do.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateTable
from sqlalchemy.types import TypeEngine

from monitor.errors import StoreError
from monitor.store.schema import Base
from monitor.store.types import (
    ADDRESS_BYTES,
    AMOUNT_BYTES,
    AMOUNT_DIGITS,
    Address,
    Uint256,
    UTCDateTime,
)

MIGRATION_LOCK_KEY = 0x6578706F73757265
"""The PostgreSQL advisory lock (``pg_advisory_xact_lock``) that ``upgrade`` and ``downgrade``
hold until they commit: the ASCII bytes of "exposure" read as a big-endian 64-bit integer,
7311146993653781093. Nothing else sharing the database should take it."""

T = TypeVar("T")

_FAILURES = (SQLAlchemyError, CommandError, OSError)
_CHECK_NAME = re.compile(r'CONSTRAINT "?(\w+)"? CHECK')


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database of ``engine`` up to ``revision`` (default: the newest)."""
    await _migrate(
        engine, lambda config: command.upgrade(config, revision), f"upgrade to {revision}"
    )


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Migrate down to ``revision``; ``"base"`` drops every table but ``alembic_version``."""
    await _migrate(
        engine, lambda config: command.downgrade(config, revision), f"downgrade to {revision}"
    )


async def current(engine: AsyncEngine) -> str | None:
    """The database's revision; None when it has never been migrated (or is at base)."""
    return await _run(engine, _current_revision, "read the schema revision")


def head() -> str:
    """The newest revision this version of exposure-monitor ships."""
    newest = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if newest is None:
        raise RuntimeError(f"no migration scripts in {_script_location()}")
    return newest


def revisions() -> list[str]:
    """Every revision this version ships, newest first."""
    scripts = ScriptDirectory.from_config(_alembic_config())
    return [script.revision for script in scripts.walk_revisions()]


async def pending_model_changes(engine: AsyncEngine) -> list[str]:
    """How the database's schema differs from the models of ``monitor.store.schema``, one
    human-readable line per difference; empty when they agree.

    Compares what Alembic's autogenerate compares (tables, columns with their types and
    nullability, indexes, unique constraints, foreign keys) and, which autogenerate does not,
    the named CHECK constraints the models create on this database's dialect.
    """
    return await _run(engine, _model_differences, "compare the schema with the models")


def context_options(dialect_name: str) -> dict[str, Any]:
    """The options ``env.py`` gives ``context.configure``, shared with the comparison above."""
    return {
        "target_metadata": Base.metadata,
        "compare_type": True,
        # SQLite cannot ALTER most things in place: Alembic recreates the table instead.
        "render_as_batch": dialect_name == "sqlite",
        "render_item": render_item,
    }


def render_item(kind: str, obj: Any, _context: AutogenContext) -> str | Literal[False]:
    """Autogenerate writes our column types as the plain types they are on each backend, so
    a migration never imports ``monitor.store.types`` and stays as written if those change."""
    if kind == "type" and isinstance(obj, Uint256):
        return (
            f'sa.Numeric({AMOUNT_DIGITS}, 0).with_variant(sa.LargeBinary({AMOUNT_BYTES}), "sqlite")'
        )
    if kind == "type" and isinstance(obj, Address):
        return f"sa.LargeBinary({ADDRESS_BYTES})"
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def describe_database(engine: AsyncEngine) -> str:
    """The engine's URL with its password hidden: how messages name a database."""
    return engine.url.render_as_string(hide_password=True)


def store_error(engine: AsyncEngine, doing: str, exc: BaseException) -> StoreError:
    """``exc`` as a ``StoreError`` naming the database and what failed (``doing``)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    lines = str(exc).strip().splitlines()
    summary = lines[0] if lines else type(exc).__name__
    return StoreError(f"could not {doing}: {summary}", database=describe_database(engine))


async def _migrate(engine: AsyncEngine, run: Callable[[Config], None], doing: str) -> None:
    def run_on(connection: Connection) -> None:
        run(_alembic_config(connection))

    try:
        async with engine.connect() as conn, _exclusive_transaction(conn):
            await conn.run_sync(run_on)
    except _FAILURES as exc:
        raise store_error(engine, doing, exc) from exc


async def _run(engine: AsyncEngine, fn: Callable[[Connection], T], doing: str) -> T:
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    except _FAILURES as exc:
        raise store_error(engine, doing, exc) from exc


@contextlib.asynccontextmanager
async def _exclusive_transaction(conn: AsyncConnection) -> AsyncIterator[None]:
    """One transaction, committed when the block succeeds, that no other migrator shares."""
    if conn.dialect.name == "postgresql":
        async with conn.begin():
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
            yield
        return
    if conn.dialect.name != "sqlite":
        async with conn.begin():
            yield
        return
    # SQLite's own recipe for schema changes: foreign keys off outside the transaction (a
    # batch migration drops and recreates tables that others refer to), a check before commit.
    await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    await conn.commit()
    try:
        async with conn.begin():
            # The driver leaves DDL outside any transaction unless one is begun explicitly.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield
            violations = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
            if violations:
                tables = sorted({str(row[0]) for row in violations})
                raise StoreError(
                    f"migration would break foreign keys in {', '.join(tables)}; rolled back",
                    database=describe_database(conn.engine),
                )
    finally:
        await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        await conn.commit()


def _script_location() -> Path:
    location = resources.files("monitor.migrations")
    if not isinstance(location, Path):
        raise RuntimeError(f"the migration scripts are not files on disk: {location}")
    return location


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # The value goes through ConfigParser interpolation: a "%" in the path must be doubled.
    config.set_main_option("script_location", str(_script_location()).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _model_differences(connection: Connection) -> list[str]:
    dialect = connection.dialect
    context = MigrationContext.configure(connection, opts=context_options(dialect.name))
    problems = [_describe(diff, dialect) for diff in compare_metadata(context, Base.metadata)]
    return problems + _check_constraint_differences(connection)


def _check_constraint_differences(connection: Connection) -> list[str]:
    inspector = inspect(connection)
    existing = set(inspector.get_table_names())
    problems = []
    for table in Base.metadata.sorted_tables:
        if table.name not in existing:
            continue  # already reported as a missing table
        # Compiling the table's DDL for this dialect applies each CHECK's ddl_if().
        expected = set(
            _CHECK_NAME.findall(str(CreateTable(table).compile(dialect=connection.dialect)))
        )
        found = inspector.get_check_constraints(table.name)
        names = {c["name"] for c in found if c["name"]}
        problems += [
            f"table {table.name}: CHECK constraint {name} is missing from the database"
            for name in sorted(expected - names)
        ]
        problems += [
            f"table {table.name}: CHECK constraint {name} is in the database but not in the models"
            for name in sorted(names - expected)
        ]
        problems += [
            f"table {table.name}: unnamed CHECK ({c['sqltext']}) is in the database but not in "
            "the models"
            for c in found
            if not c["name"]
        ]
    return problems


def _describe(diff: Any, dialect: Dialect) -> str:
    """One of autogenerate's diff tuples (or a list of them for one column) in words."""
    if isinstance(diff, list):
        return "; ".join(_describe(item, dialect) for item in diff)
    kind, *rest = diff
    where = (
        "missing from the database"
        if kind.startswith("add_")
        else "in the database but not in the models"
    )
    match kind:
        case "add_table" | "remove_table":
            return f"table {rest[0].name}: {where}"
        case "add_column" | "remove_column":
            _schema, table, column = rest
            return f"column {table}.{column.name}: {where}"
        case "add_index" | "remove_index":
            return f"index {rest[0].name} on {rest[0].table.name}: {where}"
        case "add_constraint" | "remove_constraint":
            return f"constraint {rest[0].name} on {rest[0].table.name}: {where}"
        case "add_fk" | "remove_fk":
            return f"foreign key {rest[0].name} on {rest[0].table.name}: {where}"
        case "modify_type":
            _schema, table, column, _existing, old, new = rest
            return (
                f"column {table}.{column}: type {_sql(old, dialect)} in the database, "
                f"{_sql(new, dialect)} in the models"
            )
        case "modify_nullable":
            _schema, table, column, _existing, old, new = rest
            return (
                f"column {table}.{column}: {_nullability(old)} in the database, "
                f"{_nullability(new)} in the models"
            )
    return f"{kind}: {' '.join(str(item) for item in rest)}"


def _sql(type_: TypeEngine[Any], dialect: Dialect) -> str:
    return str(type_.compile(dialect=dialect))


def _nullability(nullable: bool) -> str:
    return "NULL" if nullable else "NOT NULL"
