"""The ``exposure-monitor`` command. Logging setup, signals and exit codes live here only.

Exit codes: 0 success; 1 unexpected internal error; 2 configuration or usage error;
3 upstream (1inch API) failure, including a poll of which any batch failed; 4 database error
(unreachable, failed migration, or `db check` found problems); 5 cannot listen: the address
is in use or not permitted (unlike 2 this may pass by itself, so systemd restarts on it);
130 interrupted; 141 the reader of standard output went away (a broken pipe).

Only the standard library and the light parts of the package are imported at the top: the
heavy libraries (aiohttp, SQLAlchemy, alembic, prometheus_client, APScheduler) and the
simulator are imported by the command that needs them, so ``--version`` and ``--help``
answer at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from monitor import __version__
from monitor.cli_logging import FORMATS, LEVELS, configured_logging
from monitor.errors import ConfigError, ListenError, StoreError, UpstreamError
from monitor.timespec import iso, parse_time

if TYPE_CHECKING:
    from monitor.config import Config

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_UPSTREAM = 3
EXIT_STORE = 4
EXIT_LISTEN = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

CONFIG_ENV = "EXPOSURE_MONITOR_CONFIG"
"""Names the config file for every command that takes ``--config`` (an explicit one wins)."""

_TIME_HELP = "ISO 8601 (UTC unless an offset is given), a duration ago (90m, 24h, 7d), or now"


def _global_options() -> argparse.ArgumentParser:
    """Options accepted before the command and after it (``run --config x --log-level debug``).

    Their defaults are suppressed so that a value given before the command is not reset by
    the command's own parser; ``main`` supplies the defaults.
    """
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--log-level",
        choices=LEVELS,
        default=argparse.SUPPRESS,
        help="log verbosity on stderr (default: info for run and demo, else warning); "
        "other libraries log at warning unless debug",
    )
    options.add_argument(
        "--log-format",
        choices=FORMATS,
        default=argparse.SUPPRESS,
        help="text (default) or json: one JSON object per line (time, level, logger, message)",
    )
    return options


def _add_config(command: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    command.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"the YAML config file (default: ${CONFIG_ENV})",
    )


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="exposure-monitor",
        description="Watch what third-party contracts could move from your wallets.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"exposure-monitor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    check = add("check", "validate a config file; exit 0 or 2")
    _add_config(check)
    check.add_argument(
        "--online",
        action="store_true",
        help="also make one cheap authenticated request per upstream: reachability, auth, latency",
    )

    once = add("once", "poll everything once and print the positions")
    source = once.add_mutually_exclusive_group()
    _add_config(source)
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

    simulate = add("simulate", "serve a simulated 1inch API")
    simulate.add_argument("--scenario", type=Path, metavar="FILE", help="default: built-in")
    simulate.add_argument(
        "--listen", default="127.0.0.1:8900", metavar="HOST:PORT", help="default: 127.0.0.1:8900"
    )
    simulate.add_argument(
        "--print-config",
        action="store_true",
        help="print a monitor config that watches the scenario, then exit",
    )

    run = add("run", "run the monitoring daemon (for systemd)")
    _add_config(run)

    demo = add("demo", "the simulator and the daemon in one process, on embedded defaults")
    demo.add_argument("--dir", type=Path, metavar="DIR", help="keep the SQLite file here")
    demo.add_argument("--listen", default="127.0.0.1:9751", metavar="HOST:PORT")
    demo.add_argument("--interval", type=float, default=5.0, metavar="SECONDS")

    findings = add("findings", "list open findings from the database")
    _add_config(findings)
    findings.add_argument("--format", choices=["table", "json"], default="table")
    findings.add_argument("--all", action="store_true", help="resolved findings too")

    snapshot = add("snapshot", "every position as known at a past time")
    _add_config(snapshot)
    snapshot.add_argument("--at", default="now", metavar="TIME", help=_TIME_HELP)
    snapshot.add_argument("--format", choices=["table", "json"], default="table")

    history = add("history", "recorded changes, oldest first")
    _add_config(history)
    history.add_argument("--since", metavar="TIME", help=_TIME_HELP + " (default: everything)")
    history.add_argument("--wallet", metavar="ADDRESS|LABEL")
    history.add_argument("--spender", metavar="ADDRESS|LABEL")
    history.add_argument("--chain", type=int, metavar="ID")
    history.add_argument("--format", choices=["table", "json"], default="table")

    diff = add("diff", "what changed between two times")
    _add_config(diff)
    diff.add_argument("--from", dest="start", required=True, metavar="TIME", help=_TIME_HELP)
    diff.add_argument("--to", dest="end", default="now", metavar="TIME", help=_TIME_HELP)
    diff.add_argument("--format", choices=["table", "json"], default="table")

    db = add("db", "migrate, inspect and prune the database")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    for name, help_text in (
        ("upgrade", "migrate the database to the newest schema revision"),
        ("current", "print the database's schema revision and the newest one"),
        ("check", "exit 0 when the database is fit for use, else print each problem; exit 4"),
        ("prune", "forget polls older than database.retention_days (or --days)"),
    ):
        db_command = db_commands.add_parser(name, help=help_text, parents=[common])
        _add_config(db_command)
        if name == "prune":
            db_command.add_argument("--days", type=int, metavar="N", help="at least 1")
            db_command.add_argument(
                "--dry-run", action="store_true", help="count what would go; delete nothing"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _resolve_config(args, parser, os.environ)
    with configured_logging(
        command=args.command,
        level=getattr(args, "log_level", None),
        fmt=getattr(args, "log_format", "text"),
        stream=sys.stderr,
    ):
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
        except ListenError as exc:
            print(f"exposure-monitor: {exc}", file=sys.stderr)
            return EXIT_LISTEN
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader went away (`... | head`): stop quietly, as other command-line tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE


def _resolve_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, environ: Mapping[str, str]
) -> None:
    """``--config``, else ``$EXPOSURE_MONITOR_CONFIG``; neither is a usage error (exit 2)."""
    if not hasattr(args, "config") or args.config is not None or getattr(args, "demo", False):
        return
    named = environ.get(CONFIG_ENV, "")
    if named:
        args.config = Path(named)
        return
    command = args.command if args.command != "db" else f"db {args.db_command}"
    alternative = " or --demo" if args.command == "once" else ""
    parser.error(f"{command}: give --config FILE{alternative}, or set {CONFIG_ENV}")


def _dispatch(args: argparse.Namespace) -> int:
    out = sys.stdout
    command = args.command
    if command == "check":
        return _check(args.config, online=args.online, out=out)
    if command == "simulate":
        return asyncio.run(_simulate(args.scenario, args.listen, args.print_config))
    if command == "demo":
        from monitor.commands import demo

        try:
            asyncio.run(
                demo.demo(directory=args.dir, listen=args.listen, interval_s=args.interval, out=out)
            )
        except ListenError as exc:  # the daemon names its setting; here the user gave --listen
            raise ListenError("--listen", exc.address, exc.reason) from None
        return EXIT_OK
    if command == "once" and args.demo:
        return asyncio.run(_once_demo(args.format, args.changes, out))
    if command == "db":
        return _db(args, out)
    from monitor.config import load_api_key, load_config

    config = load_config(args.config)
    now = datetime.now(UTC)
    if command in ("once", "run"):
        from monitor.commands.check import source_problems

        api_key = load_api_key()
        # What check refuses, these refuse too: a chain nothing could read would otherwise
        # be polled by no source at all, and look quiet.
        problems = source_problems(config, api_key)
        if problems:
            raise ConfigError("", "; ".join(problems))
    if command == "once":
        from monitor.collector import deferred_full_collections
        from monitor.commands import poll

        with deferred_full_collections():  # no full collection in the middle of the poll
            ok = asyncio.run(
                poll.poll_and_record(
                    config, api_key, fmt=args.format, changes_only=args.changes, out=out,
                    err=sys.stderr,
                )
            )  # fmt: skip
        return EXIT_OK if ok else EXIT_UPSTREAM
    if command == "run":
        import faulthandler

        from monitor.collector import deferred_full_collections
        from monitor.daemon.run import run_daemon

        faulthandler.enable()  # systemd's watchdog aborts with SIGABRT: leave a traceback
        with deferred_full_collections():  # at the end of each poll, not in its middle
            asyncio.run(run_daemon(config, api_key))
        return EXIT_OK
    if command == "findings":
        from monitor.commands import findings

        asyncio.run(
            findings.show_findings(config, fmt=args.format, include_resolved=args.all, out=out)
        )
        return EXIT_OK
    from monitor.commands import history

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
                # An address or a label: resolved against the config by show_history.
                wallet=args.wallet,
                spender=args.spender,
                fmt=args.format,
                out=out,
            )
        )
        return EXIT_OK
    if command == "diff":
        start, end = _time_range(args.start, args.end, now)
        asyncio.run(history.show_diff(config, start=start, end=end, fmt=args.format, out=out))
        return EXIT_OK
    raise ConfigError("command", f"unknown command {command!r}")


def _time(text: str, option: str, now: datetime) -> datetime:
    try:
        return parse_time(text, now=now)
    except ValueError as exc:
        raise ConfigError(option, str(exc)) from None


def _time_range(start_text: str, end_text: str, now: datetime) -> tuple[datetime, datetime]:
    """``--from`` and ``--to``; reversed, they are a usage error, not an inverted diff."""
    start, end = _time(start_text, "--from", now), _time(end_text, "--to", now)
    if start > end:
        raise ConfigError(
            "--from/--to",
            f"--from {start_text} ({iso(start)}) is after --to {end_text} ({iso(end)})",
        )
    return start, end


def _check(path: Path, *, online: bool, out: TextIO) -> int:
    from monitor.commands.check import run_check

    return run_check(path, online=online, out=out, err=sys.stderr)


async def _once_demo(fmt: str, changes_only: bool, out: TextIO) -> int:
    """``once`` against the built-in scenario in-process, recorded in a throwaway SQLite."""
    import tempfile

    from monitor.commands import demo, poll
    from monitor.simulator.scenario import load_scenario
    from monitor.simulator.server import run_simulator

    scenario = load_scenario(None)
    with tempfile.TemporaryDirectory(prefix="exposure-monitor-once-") as scratch:
        async with run_simulator(scenario) as simulator:
            database = Path(scratch) / "once.sqlite"
            config = demo.demo_config(scenario, simulator.base_url, database)
            ok = await poll.poll_and_record(
                config, None, fmt=fmt, changes_only=changes_only, out=out, err=sys.stderr
            )
    return EXIT_OK if ok else EXIT_UPSTREAM


async def _simulate(scenario_path: Path | None, listen: str, print_config: bool) -> int:
    import signal

    import yaml

    from monitor.config.loader import parse_listen
    from monitor.simulator.scenario import load_scenario
    from monitor.simulator.server import run_simulator

    scenario = load_scenario(scenario_path)
    host, port = parse_listen(listen, "--listen")
    if print_config:
        base = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        document = scenario.monitor_config(base, discovery=True)
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False))
        return EXIT_OK
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with run_simulator(scenario, host=host, port=port, setting="--listen") as simulator:
            print(f"simulator listening on {simulator.base_url}", flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return EXIT_OK


def _db(args: argparse.Namespace, out: TextIO) -> int:
    from monitor.config import load_config

    config = load_config(args.config)
    if args.db_command == "prune":
        days: int | None = args.days
        if days is not None and days < 1:
            raise ConfigError("--days", f"must be at least 1, got {days}")
        return asyncio.run(_prune(config, days=days, dry_run=args.dry_run, out=out))
    return asyncio.run(_db_schema(args.db_command, config, out))


async def _prune(config: Config, *, days: int | None, dry_run: bool, out: TextIO) -> int:
    from monitor.commands import history

    await history.prune(config, now=datetime.now(UTC), days=days, dry_run=dry_run, out=out)
    return EXIT_OK


async def _db_schema(command: str, config: Config, out: TextIO) -> int:
    from monitor.store import migrate
    from monitor.store.checks import check_database
    from monitor.store.engine import create_engine

    err = sys.stderr
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
