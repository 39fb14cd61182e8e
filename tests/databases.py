"""Databases for the tests: a fresh PostgreSQL database per test.

They live on the server named by ``EXPOSURE_MONITOR_TEST_POSTGRES`` (default
``POSTGRES_ADMIN_URL``). When it cannot be reached the tests fail, never skip.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

POSTGRES_ENV = "EXPOSURE_MONITOR_TEST_POSTGRES"
POSTGRES_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def postgres_admin_url() -> URL:
    """The server the PostgreSQL tests use, as an URL naming a database to connect to."""
    return make_url(os.environ.get(POSTGRES_ENV, POSTGRES_ADMIN_URL))


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the test server (async URL), dropped afterwards."""
    admin_url = postgres_admin_url()
    name = f"exposure_monitor_test_{uuid.uuid4().hex[:16]}"
    # Creating and dropping databases needs no event loop: the sync psycopg driver does it.
    admin = sa.create_engine(
        admin_url.set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except SQLAlchemyError as exc:
        admin.dispose()
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        pytest.fail(
            f"PostgreSQL test server {admin_url.render_as_string(hide_password=True)} is not "
            f"usable: {str(reason).strip()}\n"
            f"Start it, or point the tests at another server with "
            f"{POSTGRES_ENV}=postgresql+asyncpg://USER[:PASSWORD]@HOST:PORT/DATABASE "
            f"(a role allowed to CREATE DATABASE). PostgreSQL tests never skip.",
            pytrace=False,
        )
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
