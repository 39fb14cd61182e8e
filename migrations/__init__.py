"""Alembic migrations of the SQL schema, installed as ``monitor.migrations``.

``monitor.store.migrate`` runs them; ``env.py`` is Alembic's entry point and is executed by
Alembic, never imported. To add a revision after changing ``monitor/store/schema.py``::

    alembic -x url=sqlite+aiosqlite:///dev.sqlite upgrade head
    alembic -x url=sqlite+aiosqlite:///dev.sqlite revision --autogenerate --rev-id NNNN -m "what"

from the source tree, which holds the developers' ``alembic.ini``. NNNN is the next free
number: Alembic overwrites a file of the same name without asking. Then read the script:
autogenerate writes every CHECK constraint for both dialects, so add ``.ddl_if(dialect=...)``
by hand to the dialect-specific ones as ``0001_initial`` does. The migration tests run every
revision on SQLite and PostgreSQL and fail while the models and the migrations disagree.
"""
