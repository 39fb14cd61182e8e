"""``exposure-monitor db check``: what is wrong with a database, as one line per problem.

Checks run in stages. The schema stage comes first and the later ones run only when it found
nothing, so they may rely on the schema being the models' schema. Add a check by writing an
``async def (engine) -> list[str]`` and appending it to ``STORE_CHECKS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.store import migrate
from monitor.store.invariants import store_invariants

DatabaseCheck = Callable[[AsyncEngine], Awaitable[list[str]]]
"""A check: the problems it finds, each a line naming the offending thing; [] when none."""

STORE_CHECKS: tuple[DatabaseCheck, ...] = (store_invariants,)
"""Invariants of the stored data, run in order (all of them) on a schema at head."""


async def check_database(engine: AsyncEngine) -> list[str]:
    """Every problem found with the database of ``engine``; [] when it is fit for use.

    Raises ``StoreError`` when the database cannot be read at all.
    """
    problems = await schema_problems(engine)
    if problems:
        return problems
    for check in STORE_CHECKS:
        problems += await check(engine)
    return problems


async def schema_problems(engine: AsyncEngine) -> list[str]:
    """The schema is at this version's head revision and matches the models."""
    revision, newest = await migrate.current(engine), migrate.head()
    if revision is None:
        return [f"not migrated (no schema revision; head is {newest}): run `db upgrade`"]
    if revision not in migrate.revisions():
        return [
            f"schema revision {revision} is unknown to this version of exposure-monitor "
            f"(head {newest}): was the database migrated by a newer one?"
        ]
    if revision != newest:
        return [f"schema revision {revision}, expected {newest}: run `db upgrade`"]
    return await migrate.pending_model_changes(engine)
