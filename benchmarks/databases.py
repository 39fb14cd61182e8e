"""Throwaway databases for the benchmark: a SQLite file in a temporary folder, or a new
PostgreSQL database on the server given (dropped afterwards), and copies of them."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import URL, make_url

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True, slots=True)
class Database:
    backend: str
    url: str
    sqlite_path: Path | None = None

    def spec(self) -> dict[str, str]:
        return {
            "backend": self.backend,
            "db_url": self.url,
            "sqlite_path": str(self.sqlite_path) if self.sqlite_path else "",
        }


class Databases:
    """Creates databases for one benchmark run and removes every one of them at the end."""

    def __init__(self, folder: Path, postgres_url: str) -> None:
        self._folder = folder
        self._admin: URL = make_url(postgres_url)
        self._created: list[str] = []

    def _admin_connect(self) -> psycopg.Connection[Any]:
        url = self._admin
        return psycopg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
        )

    def server_version(self) -> str:
        with self._admin_connect() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"PostgreSQL {row[0].split()[0]}" if row else "PostgreSQL ?"

    def new(self, backend: str, name: str) -> Database:
        if backend == "sqlite":
            path = self._folder / f"{name}.sqlite"
            return Database("sqlite", f"sqlite+aiosqlite:///{path}", path)
        database = f"exposure_monitor_bench_{name}_{uuid.uuid4().hex[:8]}"
        with self._admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        self._created.append(database)
        return Database(
            "postgresql",
            self._admin.set(database=database).render_as_string(hide_password=False),
        )

    def reserve_copy(self, source: Database, name: str) -> Database:
        """Where a copy of ``source`` will go (``copy_database`` makes it); dropped at the end."""
        if source.backend == "sqlite":
            path = self._folder / f"{name}.sqlite"
            return Database("sqlite", f"sqlite+aiosqlite:///{path}", path)
        database = f"exposure_monitor_bench_{name}_{uuid.uuid4().hex[:8]}"
        self._created.append(database)
        return Database(
            "postgresql",
            self._admin.set(database=database).render_as_string(hide_password=False),
        )

    @property
    def admin_url(self) -> str:
        return self._admin.render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self._created:
            return
        with self._admin_connect() as conn:
            for database in self._created:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self._created.clear()


def copy_database(source_url: str, target_url: str, admin_url: str | None) -> None:
    """Copy a database nobody is connected to: the SQLite file (after a checkpoint), or a
    PostgreSQL database through ``CREATE DATABASE ... TEMPLATE``."""
    source, target = make_url(source_url), make_url(target_url)
    if source.get_backend_name() == "sqlite":
        assert source.database and target.database
        with contextlib.closing(sqlite3.connect(source.database)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(source.database, target.database)
        return
    admin = make_url(admin_url or DEFAULT_POSTGRES)
    with psycopg.connect(
        host=admin.host or "127.0.0.1",
        port=admin.port or 5432,
        user=admin.username or "postgres",
        password=admin.password,
        dbname=admin.database or "postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'CREATE DATABASE "{target.database}" TEMPLATE "{source.database}"')
