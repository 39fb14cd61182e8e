"""Alembic's environment: runs the migrations on the connection it is handed.

``monitor.store.migrate`` opens a connection, begins its transaction and passes the
connection in ``config.attributes["connection"]``; that is how the CLI, the daemon (inside
its running event loop) and the tests migrate. Only when no connection is given, as when a
developer runs ``alembic`` in the source tree, does this file connect by itself, to
``-x url=...`` or ``sqlalchemy.url``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from monitor.store.engine import create_engine
from monitor.store.migrate import context_options


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, **context_options(connection.dialect.name))
    # A no-op when the caller's transaction is open already: the caller commits.
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_on_own_engine(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise CommandError("no database: pass -x url=sqlite+aiosqlite:///dev.sqlite")
    return url


def main() -> None:
    if context.is_offline_mode():
        raise CommandError("offline mode (--sql) is not supported")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run_migrations_on_own_engine(database_url()))
        return
    raise CommandError(
        "called inside a running event loop without a connection: use monitor.store.migrate"
    )


main()  # Alembic executes this file for each command; nothing imports it.
