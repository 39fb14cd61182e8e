"""``findings``: the findings recorded in the database."""

from __future__ import annotations

import json
from typing import TextIO

from monitor.commands.history import require_history
from monitor.config import Config
from monitor.render import safe_text, spender_text, wallet_text
from monitor.runtime import open_store
from monitor.timespec import iso


async def show_findings(config: Config, *, fmt: str, include_resolved: bool, out: TextIO) -> None:
    """Findings from the database (open ones unless asked for all).

    ``StoreError`` ("no polls recorded in DATABASE yet") and nothing on ``out`` when no poll
    has observed anything: "no open findings" would claim what nobody checked.
    """
    async with open_store(config) as store:
        await require_history(store)
        found = await store.findings(include_resolved=include_resolved)
    for f in found:
        if fmt == "json":
            row = {
                "rule": f.rule,
                "severity": f.severity,
                "chain_id": f.chain_id,
                "wallet": f.wallet,
                "spender": f.spender,
                "token": f.token,
                "opened_at": iso(f.opened_at),
                "resolved_at": iso(f.resolved_at) if f.resolved_at else None,
                "suppressed": f.suppressed,
                "detail": f.detail,
            }
            out.write(json.dumps(row, ensure_ascii=True) + "\n")
        else:
            out.write(
                f"{iso(f.opened_at)}  {f.severity:<8} {f.rule:<20} chain {f.chain_id}  "
                f"{wallet_text(config, f.wallet)} -> {spender_text(config, f.chain_id, f.spender)}"
                f"{'  (suppressed)' if f.suppressed else ''}  {safe_text(f.detail, 120)}\n"
            )
    if fmt != "json" and not found:
        out.write("no open findings\n" if not include_resolved else "no findings\n")
