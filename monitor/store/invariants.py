"""The invariants of the stored history, for ``db check``: each violation as one line.

1. Values are versioned: consecutive versions of a key differ, and a key's first version is
   not zero (absent already means zero).
2. Every version belongs to a poll that succeeded at least in part.
3. Versions and change events agree: each version has exactly one event at its poll with the
   previous value as ``old`` and its own as ``new``, and each event has its version. The
   baseline (the first poll that observed anything) is stored once: its versions are its
   events (first observations; ``db prune`` moves each key's value at the cutoff there), and
   no event is stored for it.
4. A poll's ``events`` count is the number of its stored events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from monitor.store.queries import first_observing_poll
from monitor.store.schema import AllowanceVersion, BalanceVersion, ChangeEventRow, Poll

MAX_REPORTED = 50


async def store_invariants(engine: AsyncEngine) -> list[str]:
    problems: list[str] = []
    async with engine.connect() as conn:
        first = await first_observing_poll(conn)
        baseline = None if first is None else first.poll_id
        outcomes = dict((await conn.execute(select(Poll.id, Poll.outcome))).all())
        events: dict[tuple[Any, ...], tuple[int, int]] = {}
        duplicates: list[str] = []
        for row in (await conn.execute(select(ChangeEventRow))).all():
            key = (row.poll_id, row.chain_id, row.wallet, row.token, row.spender)
            if key in events:
                duplicates.append(f"event {row.id}: a second event for {_name(key)}")
            if row.poll_id == baseline:
                duplicates.append(
                    f"event {row.id}: stored for the baseline poll {baseline}, whose values "
                    f"are its events: {_name(key)}"
                )
            events[key] = (row.old, row.new)
        problems += duplicates
        for table, columns in (
            (AllowanceVersion, ("chain_id", "wallet", "token", "spender")),
            (BalanceVersion, ("chain_id", "wallet", "token")),
        ):
            problems += await _check_versions(conn, table, columns, outcomes, events, baseline)
        for key in events:
            problems.append(f"event for {_name(key)} has no matching value version")
        counted = Counter(
            poll_id for (poll_id,) in (await conn.execute(select(ChangeEventRow.poll_id))).all()
        )
        for poll_id, stored in (await conn.execute(select(Poll.id, Poll.events))).all():
            found = counted.get(poll_id, 0)
            if found != stored:
                problems.append(f"poll {poll_id}: records {stored} events but {found} are stored")
    if len(problems) > MAX_REPORTED:
        problems = [*problems[:MAX_REPORTED], f"... and {len(problems) - MAX_REPORTED} more"]
    return problems


async def _check_versions(
    conn: AsyncConnection,
    table: type[AllowanceVersion] | type[BalanceVersion],
    columns: Sequence[str],
    outcomes: dict[int, str],
    events: dict[tuple[Any, ...], tuple[int, int]],
    baseline: int | None,
) -> list[str]:
    problems: list[str] = []
    keys = [getattr(table, c) for c in columns]
    query = select(*keys, table.poll_id, table.amount).order_by(*keys, table.poll_id)
    previous_key: tuple[Any, ...] | None = None
    previous_amount = 0
    for row in (await conn.execute(query)).all():
        key = tuple(row[: len(columns)])
        poll_id, amount = row.poll_id, row.amount
        if key != previous_key:
            previous_key, previous_amount = key, 0
            if amount == 0:
                problems.append(f"{table.__tablename__} {_key(key)}: first version is zero")
        elif amount == previous_amount:
            problems.append(
                f"{table.__tablename__} {_key(key)}: poll {poll_id} repeats the previous value"
            )
        outcome = outcomes.get(poll_id)
        if outcome is None:
            problems.append(f"{table.__tablename__} {_key(key)}: poll {poll_id} does not exist")
        elif outcome == "failed":
            problems.append(f"{table.__tablename__} {_key(key)}: written by failed poll {poll_id}")
        spender = key[3] if len(key) == 4 else None
        event_key = (poll_id, key[0], key[1], key[2], spender)
        event = events.pop(event_key, None)
        if event is None:
            if poll_id != baseline:
                problems.append(f"{table.__tablename__} {_key(key)}: poll {poll_id} has no event")
        elif event != (previous_amount, amount):
            problems.append(
                f"{table.__tablename__} {_key(key)}: event at poll {poll_id} says "
                f"{event[0]} -> {event[1]}, versions say {previous_amount} -> {amount}"
            )
        previous_amount = amount
    return problems


def _key(key: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(part) for part in key) + ")"


def _name(event_key: tuple[Any, ...]) -> str:
    poll_id, chain_id, wallet, token, spender = event_key
    what = f"allowance of {token} to {spender}" if spender else f"balance of {token}"
    return f"poll {poll_id} chain {chain_id} wallet {wallet}: {what}"
