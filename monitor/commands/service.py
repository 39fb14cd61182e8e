"""``demo`` and ``findings`` (``run`` is ``monitor.daemon.run.run_daemon`` itself)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TextIO

from monitor.commands.history import require_history
from monitor.config import Config, parse_config
from monitor.daemon.run import run_daemon
from monitor.render import safe_text, spender_text, wallet_text
from monitor.runtime import open_store
from monitor.simulator.model import Scenario
from monitor.simulator.scenario import load_scenario
from monitor.simulator.server import run_simulator
from monitor.timespec import iso

DEMO_RATE = 50.0
"""The in-process simulator enforces no rate limit: do not wait a second a request."""


def demo_config(
    scenario: Scenario, base_url: str, database: Path, **sections: dict[str, object]
) -> Config:
    """A config watching ``scenario`` served at ``base_url``, recording into ``database``."""
    document = scenario.monitor_config(base_url)
    document["api"] = {"base_url": base_url, "requests_per_second": DEMO_RATE}
    document["database"] = {"url": f"sqlite+aiosqlite:///{database}"}
    document.update(sections)
    return parse_config(document)


async def demo(*, directory: Path | None, listen: str, interval_s: float, out: TextIO) -> None:
    """The simulator's default scenario and the daemon in one process, SQLite on disk."""
    scenario = load_scenario(None)
    with tempfile.TemporaryDirectory(prefix="exposure-monitor-demo-") as scratch:
        folder = directory or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        async with run_simulator(scenario) as simulator:
            config = demo_config(
                scenario,
                simulator.base_url,
                folder / "demo.sqlite",
                poll={"interval_s": interval_s},
                metrics={"listen": listen},
            )

            def announce(url: str) -> None:
                out.write(
                    f"exposure-monitor demo: simulator at {simulator.base_url}\n"
                    f"  status page  {url}/\n"
                    f"  metrics      {url}/metrics\n"
                    f"  database     {folder / 'demo.sqlite'}\n"
                    f"polling every {interval_s:g}s; the scenario grants an unlimited DAI approval "
                    "at its 3rd poll and revokes it at its 6th. Ctrl-C stops.\n"
                )
                out.flush()

            await run_daemon(config, None, on_listening=announce)


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
