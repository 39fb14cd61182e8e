"""The ``exposure-monitor`` command. Logging setup, signals and exit codes live here only.

Exit codes: 0 success; 1 unexpected internal error; 2 configuration or usage error;
3 upstream (1inch API) failure, including a poll of which any batch failed; 4 database error
(unreachable, failed migration, or `db check` found problems); 130 interrupted; 141 the
reader of standard output went away (a broken pipe).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import yaml

from monitor import __version__
from monitor.commands import history, poll, service
from monitor.config import load_api_key, load_config
from monitor.config.loader import parse_listen
from monitor.daemon.run import run_daemon
from monitor.domain.addresses import InvalidAddress, canonical_address
from monitor.errors import ConfigError, StoreError, UpstreamError
from monitor.simulator.scenario import load_scenario
from monitor.simulator.server import run_simulator
from monitor.store import migrate
from monitor.store.checks import check_database
from monitor.store.engine import create_engine
from monitor.timespec import parse_time

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_UPSTREAM = 3
EXIT_STORE = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

_TIME_HELP = "ISO 8601 (UTC unless an offset is given), a duration ago (90m, 24h, 7d), or now"

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
    once.add_argument(
        "--changes",
        action="store_true",
        help="print only what changed since the previous poll (as JSON lines with --format json)",
    )

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

    run = commands.add_parser("run", help="run the monitoring daemon (for systemd)")
    run.add_argument("--config", required=True, type=Path, metavar="FILE")

    demo = commands.add_parser(
        "demo", help="the simulator and the daemon in one process, on embedded defaults"
    )
    demo.add_argument("--dir", type=Path, metavar="DIR", help="keep the SQLite file here")
    demo.add_argument("--listen", default="127.0.0.1:9751", metavar="HOST:PORT")
    demo.add_argument("--interval", type=float, default=5.0, metavar="SECONDS")

    findings = commands.add_parser("findings", help="list open findings from the database")
    findings.add_argument("--config", required=True, type=Path, metavar="FILE")
    findings.add_argument("--format", choices=["table", "json"], default="table")
    findings.add_argument("--all", action="store_true", help="resolved findings too")

    snapshot = commands.add_parser("snapshot", help="every position as known at a past time")
    snapshot.add_argument("--config", required=True, type=Path, metavar="FILE")
    snapshot.add_argument("--at", default="now", metavar="TIME", help=_TIME_HELP)
    snapshot.add_argument("--format", choices=["table", "json"], default="table")

    history = commands.add_parser("history", help="recorded changes, oldest first")
    history.add_argument("--config", required=True, type=Path, metavar="FILE")
    history.add_argument("--since", metavar="TIME", help=_TIME_HELP + " (default: everything)")
    history.add_argument("--wallet", metavar="ADDRESS")
    history.add_argument("--spender", metavar="ADDRESS")
    history.add_argument("--chain", type=int, metavar="ID")
    history.add_argument("--format", choices=["table", "json"], default="table")

    diff = commands.add_parser("diff", help="what changed between two times")
    diff.add_argument("--config", required=True, type=Path, metavar="FILE")
    diff.add_argument("--from", dest="start", required=True, metavar="TIME", help=_TIME_HELP)
    diff.add_argument("--to", dest="end", default="now", metavar="TIME", help=_TIME_HELP)
    diff.add_argument("--format", choices=["table", "json"], default="table")

    db = commands.add_parser("db", help="migrate, inspect and prune the database")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    for name, help_text in (
        ("upgrade", "migrate the database to the newest schema revision"),
        ("current", "print the database's schema revision and the newest one"),
        ("check", "exit 0 when the database is fit for use, else print each problem; exit 4"),
        ("prune", "forget polls older than database.retention_days (or --days)"),
    ):
        db_command = db_commands.add_parser(name, help=help_text)
        db_command.add_argument("--config", required=True, type=Path, metavar="FILE")
        if name == "prune":
            db_command.add_argument("--days", type=int, metavar="N")
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
        return _dispatch(args)
    except ConfigError as exc:
        print(f"exposure-monitor: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"exposure-monitor: database error: {exc}", file=sys.stderr)
        return EXIT_STORE
    except UpstreamError as exc:
        print(f"exposure-monitor: upstream error: {exc}", file=sys.stderr)
        return EXIT_UPSTREAM
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _dispatch(args: argparse.Namespace) -> int:
    out = sys.stdout
    command = args.command
    if command == "check":
        return _check(args.config, out)
    if command == "simulate":
        return asyncio.run(_simulate(args.scenario, args.listen, args.print_config))
    if command == "demo":
        asyncio.run(
            service.demo(directory=args.dir, listen=args.listen, interval_s=args.interval, out=out)
        )
        return EXIT_OK
    if command == "once" and args.demo:
        return asyncio.run(_once_demo(args.format, args.changes, out))
    if command == "db":
        return asyncio.run(_db(args.db_command, args.config, args.__dict__.get("days"), out))
    config = load_config(args.config)
    now = datetime.now(UTC)
    if command == "once":
        ok = asyncio.run(
            poll.poll_and_record(
                config, load_api_key(), fmt=args.format, changes_only=args.changes, out=out,
                err=sys.stderr,
            )
        )  # fmt: skip
        return EXIT_OK if ok else EXIT_UPSTREAM
    if command == "run":
        faulthandler.enable()  # systemd's watchdog aborts with SIGABRT: leave a traceback
        asyncio.run(run_daemon(config, load_api_key()))
        return EXIT_OK
    if command == "findings":
        asyncio.run(
            service.show_findings(config, fmt=args.format, include_resolved=args.all, out=out)
        )
        return EXIT_OK
    if command == "snapshot":
        at = _time(args.at, "--at", now)
        asyncio.run(history.show_snapshot(config, at=at, fmt=args.format, out=out))
        return EXIT_OK
    if command == "history":
        asyncio.run(
            history.show_history(
                config,
                since=_time(args.since, "--since", now) if args.since else None,
                chain_id=args.chain,
                wallet=_address(args.wallet, "--wallet"),
                spender=_address(args.spender, "--spender"),
                fmt=args.format,
                out=out,
            )
        )
        return EXIT_OK
    if command == "diff":
        start, end = _time(args.start, "--from", now), _time(args.end, "--to", now)
        asyncio.run(history.show_diff(config, start=start, end=end, fmt=args.format, out=out))
        return EXIT_OK
    raise ConfigError("command", f"unknown command {command!r}")


def _time(text: str, option: str, now: datetime) -> datetime:
    try:
        return parse_time(text, now=now)
    except ValueError as exc:
        raise ConfigError(option, str(exc)) from None


def _address(text: str | None, option: str) -> str | None:
    if text is None:
        return None
    try:
        return canonical_address(text)
    except InvalidAddress as exc:
        raise ConfigError(option, exc.reason) from None


def _check(path: Path, out: TextIO) -> int:
    config = load_config(path)
    load_api_key()  # a malformed key is a configuration error too
    spenders = sum(len(c.spenders) for c in config.chains)
    out.write(
        f"{path}: ok ({len(config.wallets)} wallets, {len(config.chains)} chains, "
        f"{spenders} spenders)\n"
    )
    return EXIT_OK


async def _once_demo(fmt: str, changes_only: bool, out: TextIO) -> int:
    """``once`` against the built-in scenario in-process, recorded in a throwaway SQLite."""
    scenario = load_scenario(None)
    with tempfile.TemporaryDirectory(prefix="exposure-monitor-once-") as scratch:
        async with run_simulator(scenario) as simulator:
            database = Path(scratch) / "once.sqlite"
            config = service.demo_config(scenario, simulator.base_url, database)
            ok = await poll.poll_and_record(
                config, None, fmt=fmt, changes_only=changes_only, out=out, err=sys.stderr
            )
    return EXIT_OK if ok else EXIT_UPSTREAM


async def _simulate(scenario_path: Path | None, listen: str, print_config: bool) -> int:
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


async def _db(command: str, path: Path, days: int | None, out: TextIO) -> int:
    config = load_config(path)
    err = sys.stderr
    if command == "prune":
        await history.prune(config, now=datetime.now(UTC), days=days, out=out)
        return EXIT_OK
    engine = create_engine(config.database.url)
    database = migrate.describe_database(engine)
    try:
        if command == "upgrade":
            before = await migrate.current(engine)
            await migrate.upgrade(engine)
            after = await migrate.current(engine)
            if before == after:
                out.write(f"{database}: already at {after} (head)\n")
            else:
                out.write(f"{database}: upgraded from {before or 'base'} to {after}\n")
            return EXIT_OK
        if command == "current":
            revision = await migrate.current(engine)
            out.write(f"current: {revision or 'none (not migrated)'}\nhead: {migrate.head()}\n")
            return EXIT_OK
        problems = await check_database(engine)
        for problem in problems:
            err.write(f"exposure-monitor: {database}: {problem}\n")
        if problems:
            return EXIT_STORE
        out.write(f"{database}: ok (revision {migrate.head()}, schema matches the models)\n")
        return EXIT_OK
    finally:
        await engine.dispose()
