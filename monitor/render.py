"""Output of CLI commands: a readable table, or JSON lines for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TextIO

from monitor.config import Config
from monitor.domain.addresses import to_checksum
from monitor.domain.model import Position, Token, format_units
from monitor.domain.records import StoredEvent
from monitor.timespec import iso

_MAX_SYMBOL = 16
_MAX_LABEL = 40


def safe_text(text: str, limit: int = _MAX_SYMBOL, *, replacement: str = "?") -> str:
    """Upstream strings are attacker-controlled: each character that is not printable (control
    characters, bidirectional overrides, invisible formatting) becomes ``replacement``, and the
    text is cut to ``limit`` characters."""
    cleaned = "".join(ch if ch.isprintable() else replacement for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def position_json(position: Position, config: Config) -> dict[str, object]:
    """The JSON fields of one position (amounts as exact decimal strings of base units),
    and ``source``: where it was read (``1inch`` or ``chain``)."""
    data = row_json(
        position.token,
        wallet=position.wallet,
        spender=position.spender,
        balance=position.balance,
        allowance=position.allowance,
        config=config,
    )
    data["source"] = position.source
    return data


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
        if event.spender is None:
            target = "balance"
        else:
            target = "-> " + spender_text(config, event.chain_id, event.spender)
        old = _amount_text(event.old, decimals, event.spender, threshold)
        new = _amount_text(event.new, decimals, event.spender, threshold)
        out.write(
            f"{iso(stored.observed_at)}  chain {event.chain_id}  "
            f"{wallet_text(config, event.wallet)}  {_symbol(token, event.token)} {target}  "
            f"{event.change.value}: {old} -> {new}\n"
        )


def short_address(address: str) -> str:
    """The checksummed address shortened for a label's company: ``0x1234…abcd``."""
    checksum = to_checksum(address)
    return f"{checksum[:6]}…{checksum[-4:]}"


def wallet_text(config: Config, wallet: str) -> str:
    """How text output names a wallet: ``label (0x1234…abcd)``, or the whole checksummed
    address when it has no label (what a user greps for)."""
    found = config.wallet(wallet)
    return _named(found.label if found else None, wallet)


def spender_text(config: Config, chain_id: int, spender: str) -> str:
    """How text output names a spender: as ``wallet_text`` names a wallet."""
    found = config.spender(chain_id, spender)
    return _named(found.label if found else None, spender)


def _named(label: str | None, address: str) -> str:
    if label:
        return f"{safe_text(label, _MAX_LABEL)} ({short_address(address)})"
    return to_checksum(address)


def _symbol(token: Token | None, address: str) -> str:
    return safe_text(token.symbol) if token and token.symbol else to_checksum(address)[:10]


def _amount_text(amount: int, decimals: int | None, spender: str | None, threshold: int) -> str:
    if spender is not None and amount >= threshold:
        return "unlimited"
    return format_units(amount, decimals)


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldingRow:
    """One row of the positions table: what ``wallet`` holds of ``token`` and what
    ``spender`` may take of it; ``spender`` None for a balance that no spender's row shows."""

    token: Token
    wallet: str
    spender: str | None
    balance: int
    allowance: int
    source: str | None = None
    """Where it was read (``1inch``, ``chain``, ``1inch+chain``); None: not shown."""


def _sort_key(p: Position) -> tuple[str, int, str, str, str, str]:
    return (p.wallet, p.chain_id, p.token.symbol.lower(), p.token.address, p.spender, p.source)


def write_json_lines(positions: Iterable[Position], out: TextIO, config: Config) -> None:
    """One JSON object per position and line (see ``position_json``); a contract for scripts:
    every position keeps its own ``balance``."""
    for position in sorted(positions, key=_sort_key):
        out.write(json.dumps(position_json(position, config), ensure_ascii=True) + "\n")


def write_table(positions: Iterable[Position], out: TextIO, config: Config) -> None:
    """``once``'s table of positions (see ``write_holdings``). With discovery, a SOURCE
    column says where each was read; a position both sources read alike is one row
    (``1inch+chain``), one they read differently a row each."""
    merged: dict[tuple[int, str, str, str, int, int], list[Position]] = {}
    for p in positions:
        key = (p.chain_id, p.wallet, p.token.address, p.spender, p.balance, p.allowance)
        merged.setdefault(key, []).append(p)
    show_source = any(p.source != "1inch" for same in merged.values() for p in same)
    write_holdings(
        (
            HoldingRow(
                token=same[0].token,
                wallet=same[0].wallet,
                spender=same[0].spender,
                balance=same[0].balance,
                allowance=same[0].allowance,
                source="+".join(sorted({p.source for p in same})) if show_source else None,
            )
            for same in merged.values()
        ),
        out,
        config,
    )


def write_holdings(rows: Iterable[HoldingRow], out: TextIO, config: Config) -> None:
    """The positions table, aligned: one row per (wallet, chain, token, spender), amounts in
    whole tokens. A balance is printed once per (wallet, chain, token), on the group's first
    row; the native coin, which needs no approval, gets one row per wallet and chain."""
    ordered = sorted(rows, key=_holding_key)
    with_source = any(row.source is not None for row in ordered)
    header: tuple[str, ...] = (
        "WALLET", "CHAIN", "TOKEN", "SPENDER", "BALANCE", "ALLOWANCE", "UNLIMITED"
    )  # fmt: skip
    if with_source:
        header += ("SOURCE",)
    threshold = config.risk.unlimited_threshold
    table: list[tuple[str, ...]] = []
    previous: tuple[str, int, str] | None = None
    for row in ordered:
        token = row.token
        group = (row.wallet, token.chain_id, token.address)
        if token.is_native:
            if group == previous:
                continue  # the same coin again, under another spender: no approval to show
            spender, allowance, unlimited = "-", "n/a (native)", "-"
        elif row.spender is None:
            spender, allowance, unlimited = "-", "-", "-"
        else:
            spender = spender_text(config, token.chain_id, row.spender)
            if row.allowance >= threshold:
                allowance, unlimited = "unlimited", "yes"
            else:
                allowance, unlimited = format_units(row.allowance, token.decimals), "no"
        cells: tuple[str, ...] = (
            wallet_text(config, row.wallet),
            str(token.chain_id),
            _symbol(token, token.address),
            spender,
            format_units(row.balance, token.decimals) if group != previous else "",
            allowance,
            unlimited,
        )
        if with_source:
            cells += (row.source or "-" if not token.is_native else "-",)
        table.append(cells)
        previous = group
    if not table:
        out.write("no positions: nothing held and nothing approved\n")
        return
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    right = {4, 5}
    for cells in [header, *table]:
        aligned = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        out.write("  ".join(aligned).rstrip() + "\n")


def _holding_key(row: HoldingRow) -> tuple[str, int, str, str, str, str]:
    token = row.token
    return (
        row.wallet,
        token.chain_id,
        token.symbol.lower(),
        token.address,
        row.spender or "",
        row.source or "",
    )
