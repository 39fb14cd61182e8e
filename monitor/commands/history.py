"""``snapshot``, ``history``, ``diff`` and ``db prune``: reading and pruning stored history.

A reader never answers as if all were well when it does not know: against a database where
no poll has observed anything yet, ``snapshot``, ``history``, ``diff`` (and ``findings``)
print nothing on standard output and raise ``StoreError`` ("no polls recorded in DATABASE
yet"), which the command line reports on stderr with exit code 4, in every format. A time
before the first poll is the first poll, with a one-line note on stderr: what happened
before monitoring began is unknown, so it is neither shown nor diffed against.
"""

from __future__ import annotations

import heapq
import json
import sys
from datetime import datetime, timedelta
from typing import TextIO

from monitor.config import Config
from monitor.domain.addresses import InvalidAddress, canonical_address
from monitor.domain.records import StoredEvent
from monitor.domain.snapshot import diff_snapshots
from monitor.errors import ConfigError, StoreError
from monitor.render import HoldingRow, row_json, safe_text, write_events, write_holdings
from monitor.runtime import open_store
from monitor.store.discovery import SqlDiscoveryStore
from monitor.store.queries import PollMark
from monitor.store.snapshots import SqlSnapshotStore, snapshot_positions
from monitor.timespec import iso


async def show_snapshot(
    config: Config, *, at: datetime, fmt: str, out: TextIO, err: TextIO | None = None
) -> None:
    """Every non-zero allowance and balance as known at ``at`` (the first poll's, with a
    note on ``err``, when ``at`` is before it)."""
    async with open_store(config) as store:
        first = await require_history(store)
        at = _not_before(first, at, "--at", "showing the first poll", err)
        stored = await store.snapshot_at(at)
        discovery = SqlDiscoveryStore(store.engine)
        discovered = {
            (chain.id, d.wallet, d.token, d.spender)
            for chain in config.discovery_chains
            for d in await discovery.discovered(chain.id)
        }
    positions = list(snapshot_positions(stored))
    named = {(c.id, s.address) for c in config.chains for s in c.spenders}

    def source(chain_id: int, wallet: str, token: str, spender: str | None) -> str | None:
        """As ``once`` shows it: 1inch for the spenders the config names, chain for what
        discovery found, both for both; None (no column) without discovery."""
        if not config.discovery_chains or spender is None:
            return None
        parts = []
        if (chain_id, spender) in named:
            parts.append("1inch")
        if (chain_id, wallet, token, spender) in discovered:
            parts.append("chain")
        return "+".join(parts) or None

    if fmt == "json":
        for token, _chain, wallet, spender, balance, allowance in positions:
            row = row_json(
                token,
                wallet=wallet,
                spender=spender,
                balance=balance,
                allowance=allowance,
                config=config,
            )
            out.write(json.dumps(row, ensure_ascii=True) + "\n")
        return
    out.write(f"snapshot of poll {stored.poll_id}, observed {iso(stored.observed_at)}\n")
    write_holdings(
        (
            HoldingRow(
                token=token,
                wallet=wallet,
                spender=spender,
                balance=balance,
                allowance=allowance,
                source=source(chain, wallet, token.address, spender),
            )
            for token, chain, wallet, spender, balance, allowance in positions
        ),
        out,
        config,
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
    """Stored change events, oldest first.

    ``wallet`` and ``spender`` are the options' text: an address, or a label from the config
    (exact and case-sensitive), which stands for every wallet, or every (chain, spender),
    carrying it. ``ConfigError`` when the text is neither.
    """
    wallets: list[str | None] = list(resolve_wallets(config, wallet)) if wallet else [None]
    spenders: list[tuple[int | None, str | None]] = (
        list(resolve_spenders(config, spender)) if spender else [(None, None)]
    )
    async with open_store(config) as store:
        await require_history(store)
        found: list[list[StoredEvent]] = []
        for wallet_address in wallets:
            for spender_chain, spender_address in spenders:
                if None not in (spender_chain, chain_id) and spender_chain != chain_id:
                    continue
                found.append(
                    await store.events(
                        since=since,
                        chain_id=chain_id if spender_chain is None else spender_chain,
                        wallet=wallet_address,
                        spender=spender_address,
                    )
                )
        tokens = await store.tokens()
    # Each query's answer is oldest first and no two overlap: merge them in time order.
    events = list(heapq.merge(*found, key=lambda e: (e.observed_at, e.poll_id)))
    write_events(events, out, tokens, fmt=fmt, config=config)
    if fmt != "json" and not events:
        out.write("no changes\n")


async def show_diff(
    config: Config,
    *,
    start: datetime,
    end: datetime,
    fmt: str,
    out: TextIO,
    err: TextIO | None = None,
) -> None:
    """What changed between the snapshots at ``start`` and ``end``.

    A time before the first poll is the first poll (with a note on ``err``): the state
    before monitoring began is unknown, and diffing from an empty one would report every
    standing approval as just granted.
    """
    async with open_store(config) as store:
        first = await require_history(store)
        start = _not_before(
            first,
            start,
            "--from",
            "comparing from the first poll (earlier changes are unknown)",
            err,
        )
        end = _not_before(first, end, "--to", "comparing up to the first poll", err)
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


async def require_history(store: SqlSnapshotStore) -> PollMark:
    """The first poll that observed anything; ``StoreError`` naming the database when there
    is none, so that no reader answers "no changes" or "no open findings" without knowing."""
    first = await store.first_poll()
    if first is not None:
        return first
    database = store.describe()
    polls = await store.poll_count()
    if polls:
        raise StoreError(
            f"no successful poll recorded in {database} yet ({polls} failed, nothing observed)"
        )
    raise StoreError(
        f"no polls recorded in {database} yet (run `once` or the daemon, or check database.url)"
    )


def _not_before(
    first: PollMark, at: datetime, option: str, instead: str, err: TextIO | None
) -> datetime:
    if at >= first.finished_at:
        return at
    (err or sys.stderr).write(
        f"note: {option} {iso(at)} is before the first poll (poll {first.poll_id}, "
        f"{iso(first.finished_at)}); {instead}\n"
    )
    return first.finished_at


def resolve_wallets(config: Config, text: str) -> tuple[str, ...]:
    """``--wallet``: an address (any, configured or not), else every configured wallet whose
    label is exactly ``text``."""
    try:
        return (canonical_address(text),)
    except InvalidAddress as exc:
        found = tuple(w.address for w in config.wallets if w.label == text)
        if found:
            return found
        labels = sorted({w.label for w in config.wallets if w.label})
        raise ConfigError("--wallet", _unknown(text, exc, "wallet", labels)) from None


def resolve_spenders(config: Config, text: str) -> tuple[tuple[int | None, str], ...]:
    """``--spender``: an address (on every chain), else every (chain, spender) of the config
    whose label is exactly ``text``."""
    try:
        return ((None, canonical_address(text)),)
    except InvalidAddress as exc:
        found = tuple(
            (chain.id, s.address)
            for chain in config.chains
            for s in chain.spenders
            if s.label == text
        )
        if found:
            return found
        labels = sorted({s.label for c in config.chains for s in c.spenders if s.label})
        raise ConfigError("--spender", _unknown(text, exc, "spender", labels)) from None


def _unknown(text: str, exc: InvalidAddress, kind: str, labels: list[str]) -> str:
    if text[:2].lower() == "0x":
        return f"{exc.reason}, and no {kind} is labelled so"
    known = ", ".join(repr(safe_text(label, 40)) for label in labels) or "none"
    return f"no {kind} or label {safe_text(text, 60)!r} in the config ({kind} labels: {known})"


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
