"""``snapshot``, ``history``, ``diff`` and ``db prune``: reading and pruning stored history."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TextIO

from monitor.config import Config
from monitor.domain.snapshot import diff_snapshots
from monitor.errors import ConfigError
from monitor.render import row_json, write_events
from monitor.runtime import open_store
from monitor.store.snapshots import StoredEvent, snapshot_positions
from monitor.timespec import iso


async def show_snapshot(config: Config, *, at: datetime, fmt: str, out: TextIO) -> None:
    """Every non-zero allowance and balance as known at ``at``."""
    async with open_store(config) as store:
        stored = await store.snapshot_at(at)
    rows = [
        row_json(
            token,
            wallet=wallet,
            spender=spender,
            balance=balance,
            allowance=allowance,
            config=config,
        )
        for token, _chain, wallet, spender, balance, allowance in snapshot_positions(stored)
    ]
    if fmt == "json":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=True) + "\n")
        return
    out.write(f"snapshot of poll {stored.poll_id}, observed {iso(stored.observed_at)}\n")
    for row in rows:
        label = row.get("wallet_label") or row["wallet"]
        spender = row.get("spender_label") or row["spender"] or "(balance only)"
        allowance = "unlimited" if row["unlimited"] else row["allowance"]
        out.write(
            f"chain {row['chain_id']}  {label}  {row['symbol'] or row['token']}  -> {spender}  "
            f"balance {row['balance']}  allowance {allowance}\n"
        )


async def show_history(
    config: Config,
    *,
    since: datetime | None,
    chain_id: int | None,
    wallet: str | None,
    spender: str | None,
    fmt: str,
    out: TextIO,
) -> None:
    """Stored change events, oldest first."""
    async with open_store(config) as store:
        events = await store.events(since=since, chain_id=chain_id, wallet=wallet, spender=spender)
        tokens = await store.tokens()
    write_events(events, out, tokens, fmt=fmt, config=config)
    if fmt != "json" and not events:
        out.write("no changes\n")


async def show_diff(
    config: Config, *, start: datetime, end: datetime, fmt: str, out: TextIO
) -> None:
    """What changed between the snapshots at ``start`` and ``end``."""
    async with open_store(config) as store:
        before = await store.snapshot_at(start)
        after = await store.snapshot_at(end)
        tokens = await store.tokens()
    events = [
        StoredEvent(poll_id=after.poll_id, observed_at=after.observed_at, event=event)
        for event in diff_snapshots(
            before.snapshot, after.snapshot, threshold=config.risk.unlimited_threshold
        )
    ]
    write_events(events, out, tokens, fmt=fmt, config=config)
    if fmt != "json" and not events:
        out.write("no changes\n")


async def prune(
    config: Config, *, now: datetime, days: int | None, dry_run: bool = False, out: TextIO
) -> None:
    """Forget polls older than ``days`` (default: ``database.retention_days``).

    ``dry_run`` prints what would be deleted (the same selection) and deletes nothing.
    """
    if days is not None and days < 1:
        raise ConfigError("--days", f"must be at least 1, got {days}")
    keep_days = days if days is not None else config.database.retention_days
    if keep_days is None:
        out.write("retention is off (database.retention_days: null): nothing pruned\n")
        return
    async with open_store(config) as store:
        result = await store.prune(older_than=now - timedelta(days=keep_days), dry_run=dry_run)
    counts = (
        f"{result.polls_deleted} polls, {result.versions_deleted} superseded values and "
        f"{result.events_deleted} events older than {keep_days} days"
    )
    if dry_run:
        out.write(f"would prune {counts} (dry run: nothing deleted)\n")
    else:
        out.write(f"pruned {counts}\n")
