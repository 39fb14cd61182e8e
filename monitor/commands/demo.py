"""``demo``: the simulator's default scenario and the daemon in one process (``run`` is
``monitor.daemon.run.run_daemon`` itself)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TextIO

from monitor.config import Config, parse_config
from monitor.daemon.run import run_daemon
from monitor.simulator.model import Scenario
from monitor.simulator.scenario import load_scenario
from monitor.simulator.server import run_simulator

DEMO_RATE = 50.0
"""The in-process simulator enforces no rate limit: do not wait a second a request."""


def demo_config(
    scenario: Scenario, base_url: str, database: Path, **sections: dict[str, object]
) -> Config:
    """A config watching ``scenario`` served at ``base_url``, recording into ``database``."""
    document = scenario.monitor_config(base_url, discovery=True)
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
                    f"polling every {interval_s:g}s; discovery reads the simulated chain too and "
                    "finds, at the first poll, an unlimited WETH approval to an exploited "
                    "contract no config names. The scenario grants an unlimited DAI approval at "
                    "its 3rd poll (revoked at its 6th) and USDT to a plain wallet at its 4th "
                    "(revoked at its 7th). Ctrl-C stops.\n"
                )
                out.flush()

            await run_daemon(config, None, on_listening=announce)
