"""The ``exposure-monitor`` command. Logging setup, signals and exit codes live here only.

Exit codes: 0 success; 1 unexpected internal error; 2 configuration or usage error;
3 upstream (1inch API) failure, including a poll of which any batch failed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TextIO

import aiohttp
import yaml

from monitor import __version__
from monitor.config import Config, load_api_key, load_config, parse_config
from monitor.config.secrets import ApiKey
from monitor.domain.addresses import to_checksum
from monitor.errors import ConfigError
from monitor.oneinch import BalanceClient, RateLimiter
from monitor.oneinch.client import RetryPolicy
from monitor.poller import poll_once
from monitor.render import write_json_lines, write_table

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_UPSTREAM = 3
EXIT_INTERRUPTED = 130

DEMO_RATE = 50.0

log = logging.getLogger("monitor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exposure-monitor",
        description="Watch what third-party contracts could move from your wallets.",
    )
    parser.add_argument("--version", action="version", version=f"exposure-monitor {__version__}")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: warning)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a config file; exit 0 or 2")
    check.add_argument("--config", required=True, type=Path, metavar="FILE")

    once = commands.add_parser("once", help="poll everything once and print the positions")
    source = once.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, metavar="FILE")
    source.add_argument(
        "--demo",
        action="store_true",
        help="poll the built-in simulator's default scenario (no API key, nothing to set up)",
    )
    once.add_argument("--format", choices=["table", "json"], default="table")

    simulate = commands.add_parser("simulate", help="serve a simulated 1inch API")
    simulate.add_argument("--scenario", type=Path, metavar="FILE", help="default: built-in")
    simulate.add_argument(
        "--listen", default="127.0.0.1:8900", metavar="HOST:PORT", help="default: 127.0.0.1:8900"
    )
    simulate.add_argument(
        "--print-config",
        action="store_true",
        help="print a monitor config that watches the scenario, then exit",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "check":
            return _check(args.config, sys.stdout)
        if args.command == "once":
            return asyncio.run(_once(args.config, args.demo, args.format, sys.stdout))
        if args.command == "simulate":
            return asyncio.run(_simulate(args.scenario, args.listen, args.print_config))
    except ConfigError as exc:
        print(f"exposure-monitor: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    parser.error(f"unknown command {args.command!r}")
    return EXIT_CONFIG  # pragma: no cover - parser.error exits


def _check(path: Path, out: TextIO) -> int:
    config = load_config(path)
    load_api_key()  # a malformed key is a configuration error too
    spenders = sum(len(c.spenders) for c in config.chains)
    out.write(
        f"{path}: ok ({len(config.wallets)} wallets, {len(config.chains)} chains, "
        f"{spenders} spenders)\n"
    )
    return EXIT_OK


@contextlib.asynccontextmanager
async def _client(config: Config, api_key: ApiKey | None) -> AsyncIterator[BalanceClient]:
    api = config.api
    async with aiohttp.ClientSession(
        headers={"User-Agent": f"exposure-monitor/{__version__}"}
    ) as session:
        yield BalanceClient(
            session,
            base_url=api.base_url,
            api_key=api_key,
            limiter=RateLimiter(api.requests_per_second),
            timeout_s=api.timeout_s,
            retry=RetryPolicy(
                max_attempts=api.max_attempts,
                backoff_initial_s=api.backoff_initial_s,
                backoff_max_s=api.backoff_max_s,
                retry_after_max_s=api.retry_after_max_s,
            ),
        )


async def _once(path: Path | None, demo: bool, fmt: str, out: TextIO) -> int:
    if demo:
        from monitor.simulator.scenario import load_scenario
        from monitor.simulator.server import run_simulator

        scenario = load_scenario(None)
        async with run_simulator(scenario) as simulator:
            document = scenario.monitor_config(simulator.base_url)
            # The in-process simulator enforces no rate limit: do not wait a second a request.
            document["api"] = {"base_url": simulator.base_url, "requests_per_second": DEMO_RATE}
            config = parse_config(document)
            return await _poll_and_print(config, None, fmt, out)
    assert path is not None
    config = load_config(path)
    return await _poll_and_print(config, load_api_key(), fmt, out)


async def _poll_and_print(config: Config, api_key: ApiKey | None, fmt: str, out: TextIO) -> int:
    async with _client(config, api_key) as client:
        result = await poll_once(client, config)
    if fmt == "json":
        write_json_lines(result.positions, out, config)
    else:
        write_table(result.positions, out, config)
    for failure in result.failures:
        print(
            f"exposure-monitor: chain {failure.chain_id} spender {to_checksum(failure.spender)} "
            f"({len(failure.wallets)} wallets) not polled: {failure.error}",
            file=sys.stderr,
        )
    return EXIT_UPSTREAM if result.failures else EXIT_OK


async def _simulate(scenario_path: Path | None, listen: str, print_config: bool) -> int:
    from monitor.config.loader import parse_listen
    from monitor.simulator.scenario import load_scenario
    from monitor.simulator.server import run_simulator

    scenario = load_scenario(scenario_path)
    host, port = parse_listen(listen, "--listen")
    if print_config:
        base = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        sys.stdout.write(yaml.safe_dump(scenario.monitor_config(base), sort_keys=False))
        return EXIT_OK
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with run_simulator(scenario, host=host, port=port) as simulator:
            print(f"simulator listening on {simulator.base_url}", flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return EXIT_OK
