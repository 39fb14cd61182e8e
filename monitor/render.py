"""Output of CLI commands: a readable table, or JSON lines for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TextIO

from monitor.config import Config
from monitor.domain.addresses import to_checksum
from monitor.domain.model import Position, Token, format_units, is_unlimited
from monitor.store.snapshots import StoredEvent
from monitor.timespec import iso

_MAX_SYMBOL = 16


def safe_text(text: str, limit: int = _MAX_SYMBOL) -> str:
    """Upstream strings are attacker-controlled: no control characters on a terminal."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def position_json(position: Position, config: Config) -> dict[str, object]:
    """The JSON fields of one position (amounts as exact decimal strings of base units)."""
    return row_json(
        position.token,
        wallet=position.wallet,
        spender=position.spender,
        balance=position.balance,
        allowance=position.allowance,
        config=config,
    )


def row_json(
    token: Token,
    *,
    wallet: str,
    spender: str | None,
    balance: int,
    allowance: int,
    config: Config,
) -> dict[str, object]:
    """One output row; ``spender`` None for a balance no allowance row shows."""
    data: dict[str, object] = {
        "chain_id": token.chain_id,
        "wallet": wallet,
        "token": token.address,
        "symbol": token.symbol,
        "decimals": token.decimals,
        "spender": spender,
        "balance": str(balance),
        "allowance": str(allowance),
        "unlimited": not token.is_native and allowance >= config.risk.unlimited_threshold,
        "native": token.is_native,
    }
    wallet_config = config.wallet(wallet)
    spender_config = config.spender(token.chain_id, spender) if spender else None
    data["wallet_label"] = wallet_config.label if wallet_config else None
    data["spender_label"] = spender_config.label if spender_config else None
    return data


def event_json(
    stored: StoredEvent, tokens: Mapping[tuple[int, str], Token], config: Config
) -> dict[str, object]:
    """One change event: ``observed_at`` ISO 8601 UTC, amounts as exact decimal strings."""
    event = stored.event
    token = tokens.get((event.chain_id, event.token))
    data: dict[str, object] = {
        "observed_at": iso(stored.observed_at),
        "poll_id": stored.poll_id,
        "chain_id": event.chain_id,
        "wallet": event.wallet,
        "token": event.token,
        "symbol": token.symbol if token else None,
        "decimals": token.decimals if token else None,
        "spender": event.spender,
        "change": event.change.value,
        "old": str(event.old),
        "new": str(event.new),
    }
    wallet_config = config.wallet(event.wallet)
    spender_config = config.spender(event.chain_id, event.spender) if event.spender else None
    data["wallet_label"] = wallet_config.label if wallet_config else None
    data["spender_label"] = spender_config.label if spender_config else None
    return data


def write_events(
    events: Iterable[StoredEvent],
    out: TextIO,
    tokens: Mapping[tuple[int, str], Token],
    *,
    fmt: str,
    config: Config,
) -> None:
    """Change events as JSON lines, or as one readable line each."""
    threshold = config.risk.unlimited_threshold
    for stored in events:
        if fmt == "json":
            out.write(json.dumps(event_json(stored, tokens, config), ensure_ascii=True) + "\n")
            continue
        event = stored.event
        token = tokens.get((event.chain_id, event.token))
        decimals = token.decimals if token else None
        symbol = (
            safe_text(token.symbol) if token and token.symbol else to_checksum(event.token)[:10]
        )
        wallet = config.wallet(event.wallet)
        spender = config.spender(event.chain_id, event.spender) if event.spender else None
        who = safe_text(wallet.display if wallet else to_checksum(event.wallet), 42)
        if event.spender is None:
            target = "balance"
        else:
            target = "-> " + safe_text(
                spender.display if spender else to_checksum(event.spender), 42
            )
        old = _amount_text(event.old, decimals, event.spender, threshold)
        new = _amount_text(event.new, decimals, event.spender, threshold)
        out.write(
            f"{iso(stored.observed_at)}  chain {event.chain_id}  {who}  {symbol} {target}  "
            f"{event.change.value}: {old} -> {new}\n"
        )


def _wallet_name(config: Config, wallet: str) -> str:
    found = config.wallet(wallet)
    return safe_text(found.display if found else to_checksum(wallet), 42)


def _spender_name(config: Config, chain_id: int, spender: str) -> str:
    found = config.spender(chain_id, spender)
    return safe_text(found.display if found else to_checksum(spender), 42)


def _symbol(token: Token | None, address: str) -> str:
    return safe_text(token.symbol) if token and token.symbol else to_checksum(address)[:10]


def _amount_text(amount: int, decimals: int | None, spender: str | None, threshold: int) -> str:
    if spender is not None and amount >= threshold:
        return "unlimited"
    return format_units(amount, decimals)


def _sort_key(p: Position) -> tuple[str, int, str, str]:
    return (p.wallet, p.chain_id, p.token.symbol.lower(), p.spender)


def write_json_lines(positions: Iterable[Position], out: TextIO, config: Config) -> None:
    for position in sorted(positions, key=_sort_key):
        out.write(json.dumps(position_json(position, config), ensure_ascii=True) + "\n")


def write_table(positions: Iterable[Position], out: TextIO, config: Config) -> None:
    header = ("WALLET", "CHAIN", "TOKEN", "SPENDER", "BALANCE", "ALLOWANCE", "UNLIMITED")
    rows: list[tuple[str, ...]] = []
    for p in sorted(positions, key=_sort_key):
        if p.token.is_native:
            allowance, unlimited = "n/a (native)", "-"
        elif is_unlimited(p, config.risk.unlimited_threshold):
            allowance, unlimited = "unlimited", "yes"
        else:
            allowance, unlimited = format_units(p.allowance, p.token.decimals), "no"
        rows.append(
            (
                _wallet_name(config, p.wallet),
                str(p.chain_id),
                _symbol(p.token, p.token.address),
                _spender_name(config, p.chain_id, p.spender),
                format_units(p.balance, p.token.decimals),
                allowance,
                unlimited,
            )
        )
    if not rows:
        out.write("no positions: nothing held and nothing approved\n")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {4, 5}
    for row in [header, *rows]:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")
