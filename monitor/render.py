"""Output of CLI commands: a readable table, or JSON lines for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from monitor.config import Config
from monitor.domain.addresses import to_checksum
from monitor.domain.model import Position, format_units, is_unlimited

_MAX_SYMBOL = 16


def safe_text(text: str, limit: int = _MAX_SYMBOL) -> str:
    """Upstream strings are attacker-controlled: no control characters on a terminal."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def position_json(position: Position, config: Config | None = None) -> dict[str, object]:
    """The JSON fields of one position (amounts as exact decimal strings of base units)."""
    token = position.token
    data: dict[str, object] = {
        "chain_id": position.chain_id,
        "wallet": position.wallet,
        "token": token.address,
        "symbol": token.symbol,
        "decimals": token.decimals,
        "spender": position.spender,
        "balance": str(position.balance),
        "allowance": str(position.allowance),
        "unlimited": is_unlimited(position),
        "native": token.is_native,
    }
    if config is not None:
        wallet = config.wallet(position.wallet)
        spender = config.spender(position.chain_id, position.spender)
        data["wallet_label"] = wallet.label if wallet else None
        data["spender_label"] = spender.label if spender else None
    return data


def _sort_key(p: Position) -> tuple[str, int, str, str]:
    return (p.wallet, p.chain_id, p.token.symbol.lower(), p.spender)


def write_json_lines(
    positions: Iterable[Position], out: TextIO, config: Config | None = None
) -> None:
    for position in sorted(positions, key=_sort_key):
        out.write(json.dumps(position_json(position, config), ensure_ascii=True) + "\n")


def write_table(positions: Iterable[Position], out: TextIO, config: Config | None = None) -> None:
    header = ("WALLET", "CHAIN", "TOKEN", "SPENDER", "BALANCE", "ALLOWANCE", "UNLIMITED")
    rows: list[tuple[str, ...]] = []
    for p in sorted(positions, key=_sort_key):
        wallet = config.wallet(p.wallet) if config else None
        spender = config.spender(p.chain_id, p.spender) if config else None
        symbol = safe_text(p.token.symbol) if p.token.symbol else to_checksum(p.token.address)[:10]
        if p.token.is_native:
            allowance, unlimited = "n/a (native)", "-"
        elif is_unlimited(p):
            allowance, unlimited = "unlimited", "yes"
        else:
            allowance, unlimited = format_units(p.allowance, p.token.decimals), "no"
        rows.append(
            (
                safe_text(wallet.display if wallet else to_checksum(p.wallet), 42),
                str(p.chain_id),
                symbol,
                safe_text(spender.display if spender else to_checksum(p.spender), 42),
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
