"""Start-up: the daemon listens at once and loads the stored state in the background.

Units (the backoff, the retry loop, the gauge, the endpoints before the state is loaded),
``run_daemon`` in-process with its restore held back, and ``exposure-monitor run`` as a
process whose restore waits on a hanging Spot Price API or on a database that cannot be
opened yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
import yaml
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from monitor.config import Config, parse_config
from monitor.daemon import run as daemon_run
from monitor.daemon.http import STATUS_PAGE_HEADERS, make_app
from monitor.daemon.metrics import Instruments, StateText
from monitor.daemon.poll_cycle import Monitor
from monitor.daemon.startup import (
    Backoff,
    Startup,
    StateLoadedCollector,
    describe_failure,
    retrying,
)
from monitor.daemon.view import MonitorView
from monitor.errors import StoreError
from monitor.ports import utc_now
from monitor.simulator.server import RunningSimulator, run_simulator
from tests.daemon_helpers import (
    add_fault,
    cli,
    get,
    metric_samples,
    simulator_process,
    simulator_state,
    wait_for,
    write_config,
)
from tests.databases import postgres_admin_url
from tests.simulator_helpers import small

LOADED = "exposure_monitor_state_loaded"

# -- units ------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(initial_s=1, max_s=60)
    assert [backoff.delay_s(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.delay_s(10_000) == 60


class Sleeps:
    """An injected ``sleep``: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


def failing(times: int, error: BaseException) -> Callable[[], Awaitable[str]]:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise error
        return "loaded"

    return attempt


async def test_a_failing_database_is_retried_with_backoff_and_readyz_says_why() -> None:
    startup, sleeps, reported = Startup(), Sleeps(), list[str]()
    startup.step("opening the database")
    down = StoreError("could not connect: connection refused", database="postgresql://db/x")
    result = await retrying(
        failing(3, down),
        startup,
        backoff=Backoff(initial_s=1, max_s=3),
        sleep=sleeps,
        on_failure=reported.append,
    )
    assert result == "loaded"
    assert sleeps.delays == [1, 2, 3]
    assert len(reported) == 3
    assert reported[-1] == (
        "restoring state: opening the database (attempt 3 failed: postgresql://db/x: could not"
        " connect: connection refused; retrying in 3s)"
    )
    assert not startup.loaded  # only the caller says it is loaded, once it serves the state


async def test_a_driver_error_is_retried_too_and_named_by_its_first_line() -> None:
    sleeps = Sleeps()
    error = OperationalError("SELECT 1", {}, sqlite3.OperationalError("unable to open database"))
    assert describe_failure(error) == "OperationalError: unable to open database"
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    for failure in (error, refused):
        assert await retrying(failing(1, failure), Startup(), backoff=Backoff(), sleep=sleeps)
    assert sleeps.delays == [1, 1]


async def test_a_bug_while_loading_is_not_retried() -> None:
    sleeps = Sleeps()
    with pytest.raises(KeyError):
        await retrying(failing(1, KeyError("bug")), Startup(), backoff=Backoff(), sleep=sleeps)
    assert sleeps.delays == []


class Progress:
    def __init__(self, at: float) -> None:
        self.last_progress_monotonic = at


def test_startup_says_what_it_waits_for_until_loaded_then_defers_to_the_poll_cycle() -> None:
    now = [100.0]
    startup = Startup(monotonic=lambda: now[0])
    assert startup.waiting_for() == "restoring state: starting"
    now[0] = 105.0
    startup.step("loading the stored state")
    assert startup.waiting_for() == "restoring state: loading the stored state"
    assert startup.last_progress_monotonic == 105.0
    startup.loaded_into(Progress(at=42.0))
    assert startup.loaded
    assert startup.waiting_for() is None
    assert startup.last_progress_monotonic == 42.0


def test_state_loaded_gauge_follows_startup() -> None:
    registry = CollectorRegistry(auto_describe=True)
    startup = Startup()
    registry.register(StateLoadedCollector(startup))
    assert registry.get_sample_value(LOADED) == 0
    startup.loaded_into(Progress(at=0.0))
    assert registry.get_sample_value(LOADED) == 1


# -- the endpoints before the state is loaded -------------------------------------------------


def unloaded_view() -> MonitorView:
    raise AssertionError("the view was read before the state was loaded")


def unloaded_state() -> StateText:
    raise AssertionError("the state metrics were read before the state was loaded")


@contextlib.asynccontextmanager
async def endpoints(startup: Startup) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    registry = CollectorRegistry(auto_describe=True)
    Instruments(registry, version="9.9.9")
    registry.register(StateLoadedCollector(startup))
    app = make_app(
        registry=registry,
        view=unloaded_view,
        state_text=unloaded_state,
        clock=utc_now,
        ready_max_age_s=900,
        loading=startup.waiting_for,
    )
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:

            async def fetch(path: str) -> tuple[int, str, Any]:
                async with session.get(server.make_url(path)) as response:
                    return response.status, await response.text(), response.headers

            yield fetch
    finally:
        await server.close()


async def test_before_the_state_is_loaded_the_endpoints_say_so_and_claim_nothing() -> None:
    startup = Startup()
    startup.step("loading the stored state")
    startup.failed("attempt 1 failed: <db> & co unreachable; retrying in 1s")
    async with endpoints(startup) as fetch:
        assert (await fetch("/healthz"))[:2] == (200, "ok\n")
        status, text, _ = await fetch("/readyz")
        assert status == 503
        assert text.startswith("not ready: restoring state: loading the stored state")
        status, text, _ = await fetch("/metrics")
        assert status == 200
        assert metric_samples(text, LOADED) == [({}, 0.0)]
        assert metric_samples(text, "exposure_monitor_build_info")
        for absent in (
            "exposure_monitor_allowance",
            "exposure_monitor_balance",
            "exposure_monitor_finding",
            "exposure_monitor_open_findings",
            "exposure_monitor_last_successful_poll_timestamp_seconds",
            "exposure_monitor_upstream_up",
        ):
            assert not metric_samples(text, absent), absent
        status, page, headers = await fetch("/")
        assert status == 200
        assert "loading the stored state" in page.lower()
        assert "no poll" not in page.lower()
        assert "&lt;db&gt; &amp; co unreachable" in page
        assert "<db>" not in page
        for name, value in STATUS_PAGE_HEADERS.items():
            assert headers[name] == value


# -- run_daemon in-process --------------------------------------------------------------------


def in_process_config(folder: Path, base_url: str, **sections: dict[str, Any]) -> Config:
    document = small().monitor_config(base_url)
    document["api"] = {"base_url": base_url, "requests_per_second": 100, "max_attempts": 1}
    document["database"] = {"url": f"sqlite+aiosqlite:///{folder / 'monitor.sqlite'}"}
    document["metrics"] = {"listen": "127.0.0.1:0"}
    document["poll"] = {"interval_s": 60, "jitter_s": 0}
    document.update(sections)
    return parse_config(document)


@contextlib.asynccontextmanager
async def daemon_in_process(
    config: Config, backoff: Backoff | None = None, environ: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, asyncio.Task[None], asyncio.Event]]:
    """``run_daemon`` as a task; yields its URL (once listening), the task and its stop."""
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        daemon_run.run_daemon(
            config,
            None,
            environ=environ or {},
            on_listening=listening.set_result,
            stop=stop,
            backoff=backoff,
        )
    )
    try:
        either: set[asyncio.Future[Any]] = {task, listening}
        await asyncio.wait(either, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        yield listening.result(), task, stop
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=30)
        if not task.done():
            task.cancel()


async def http_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 30
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def held_restore(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """``Monitor.restore`` waits for the returned event before it runs."""
    release = asyncio.Event()
    original = Monitor.restore

    async def restore(self: Monitor) -> None:
        await release.wait()
        await original(self)

    monkeypatch.setattr(Monitor, "restore", restore)
    return release


def balance_requests(simulator: RunningSimulator) -> int:
    return sum(1 for r in simulator.requests if r.path.startswith("/balance/"))


async def test_run_listens_before_the_restore_and_polls_only_after_it(
    tmp_path: Path, held_restore: asyncio.Event
) -> None:
    async with run_simulator(small()) as simulator:
        config = in_process_config(tmp_path, simulator.base_url)
        async with daemon_in_process(config) as (url, task, stop):
            assert await http_get(url + "/healthz") == (200, "ok\n")
            await eventually(
                lambda: _readyz_says(url, "restoring state: loading the stored state"),
                "the restore to begin",
            )
            _, text = await http_get(url + "/metrics")
            assert metric_samples(text, LOADED) == [({}, 0.0)]
            assert not metric_samples(text, "exposure_monitor_allowance")
            assert "loading the stored state" in (await http_get(url + "/"))[1]
            assert balance_requests(simulator) == 0, "a poll ran before the state was loaded"
            held_restore.set()
            await eventually(lambda: _status_is(url + "/readyz", 200), "ready after a poll")
            assert balance_requests(simulator) > 0
            _, text = await http_get(url + "/metrics")
            assert metric_samples(text, LOADED) == [({}, 1.0)]
            assert metric_samples(text, "exposure_monitor_allowance")
            stop.set()
            await asyncio.wait_for(task, 30)


async def _readyz_says(url: str, text: str) -> bool:
    status, body = await http_get(url + "/readyz")
    return status == 503 and text in body


async def _status_is(url: str, status: int) -> bool:
    return (await http_get(url))[0] == status


async def test_stop_during_the_restore_exits_cleanly_without_polling(
    tmp_path: Path, held_restore: asyncio.Event
) -> None:
    async with run_simulator(small()) as simulator:
        config = in_process_config(tmp_path, simulator.base_url)
        async with daemon_in_process(config) as (url, task, stop):
            await eventually(
                lambda: _readyz_says(url, "loading the stored state"), "the restore to begin"
            )
            stop.set()
            await asyncio.wait_for(task, 10)  # returns: no exception, no hang
        assert balance_requests(simulator) == 0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A datagram socket standing in for systemd's, and the environment that names it."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "300000"}


def notifications(sock: socket.socket) -> list[bytes]:
    received = []
    with contextlib.suppress(BlockingIOError):
        while True:
            received.append(sock.recv(4096))
    return received


async def test_systemd_hears_ready_once_listening_and_pings_while_the_restore_runs(
    tmp_path: Path,
    held_restore: asyncio.Event,
    notify_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, environ = notify_socket
    async with run_simulator(small()) as simulator:
        config = in_process_config(tmp_path, simulator.base_url)
        async with daemon_in_process(config, environ=environ) as (url, task, stop):
            seen: list[bytes] = []

            async def heard(message: bytes) -> bool:
                seen.extend(notifications(sock))
                return message in seen

            await eventually(lambda: heard(b"WATCHDOG=1"), "a watchdog ping while restoring")
            assert seen.index(b"READY=1") < seen.index(b"WATCHDOG=1")
            assert b"STATUS=restoring state" in seen
            assert (await http_get(url + "/readyz"))[0] == 503  # ready for systemd, not /readyz
            held_restore.set()
            await eventually(lambda: heard(b"STATUS=polling"), "polling")
            stop.set()
            await asyncio.wait_for(task, 30)
    seen += notifications(sock)
    assert seen[-1] == b"STOPPING=1"


async def test_stopping_during_the_restore_is_the_last_word_to_systemd(
    tmp_path: Path,
    held_restore: asyncio.Event,
    notify_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    sock, environ = notify_socket
    async with run_simulator(small()) as simulator:
        config = in_process_config(tmp_path, simulator.base_url)
        async with daemon_in_process(config, environ=environ) as (url, task, stop):
            await eventually(
                lambda: _readyz_says(url, "loading the stored state"), "the restore to begin"
            )
            stop.set()
            await asyncio.wait_for(task, 10)
    seen = notifications(sock)
    assert b"READY=1" in seen
    assert seen[-1] == b"STOPPING=1"


async def test_a_bug_while_restoring_ends_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Monitor) -> None:
        raise ZeroDivisionError("a bug in restore")

    monkeypatch.setattr(Monitor, "restore", broken)
    async with run_simulator(small()) as simulator:
        config = in_process_config(tmp_path, simulator.base_url)
        async with daemon_in_process(config) as (_, task, _stop):
            with pytest.raises(ZeroDivisionError):
                await asyncio.wait_for(task, 30)


async def test_a_database_that_cannot_be_opened_is_retried_until_it_can(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    async with run_simulator(small()) as simulator:
        config = in_process_config(folder, simulator.base_url)
        backoff = Backoff(initial_s=0.05, max_s=0.2)
        async with daemon_in_process(config, backoff) as (url, task, _stop):
            await eventually(
                lambda: _readyz_says(url, "unable to open database file"), "a failed attempt"
            )
            assert not task.done()
            assert balance_requests(simulator) == 0
            folder.mkdir()
            await eventually(lambda: _status_is(url + "/readyz", 200), "ready once it opens")


def admin_engine() -> sa.Engine:
    """The PostgreSQL test server, through the sync driver, outside any transaction."""
    return sa.create_engine(
        postgres_admin_url().set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
    )


def execute(engine: sa.Engine, statement: str) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql(statement)


async def test_a_postgresql_database_created_after_start_is_picked_up(tmp_path: Path) -> None:
    name = f"exposure_monitor_test_{uuid.uuid4().hex[:16]}"
    url = postgres_admin_url().set(database=name).render_as_string(hide_password=False)
    admin = admin_engine()
    try:
        async with run_simulator(small()) as simulator:
            config = in_process_config(tmp_path, simulator.base_url, database={"url": url})
            backoff = Backoff(initial_s=0.05, max_s=0.2)
            async with daemon_in_process(config, backoff) as (url_, task, _stop):
                await eventually(
                    lambda: _readyz_says(url_, f'database "{name}" does not exist'),
                    "a failed attempt",
                )
                assert not task.done()
                await asyncio.to_thread(execute, admin, f'CREATE DATABASE "{name}"')
                await eventually(lambda: _status_is(url_ + "/readyz", 200), "ready once it exists")
    finally:
        execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# -- exposure-monitor run as a process --------------------------------------------------------

PRICE_HANG_S = 8


def until(condition: Callable[[], bool], timeout_s: float) -> float | None:
    """Seconds until ``condition`` held (checked every 20 ms), None if it never did."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(OSError):
            if condition():
                return time.monotonic() - started
        time.sleep(0.02)
    return None


@contextlib.contextmanager
def daemon(config: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """``exposure-monitor run``; yields it and when it was started (``time.monotonic``)."""
    with log.open("wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "--log-level",
                "info",
                "run",
                "--config",
                str(config),
            ],
            stdout=stderr,
            stderr=stderr,
        )
    try:
        yield proc, started
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.slow
def test_run_answers_healthz_while_a_hanging_price_api_holds_the_restore(
    tmp_path: Path,
) -> None:
    with simulator_process() as base_url:
        config, metrics_url = write_config(
            tmp_path / "config.yaml", base_url, api={"timeout_s": 30, "max_attempts": 1}
        )
        recorded = cli("once", "--config", str(config))
        assert recorded.returncode == 0, recorded.stderr  # a stored poll to restore
        add_fault(base_url, endpoint="price", body="ok", delay_s=PRICE_HANG_S)
        polls_before = simulator_state(base_url)["poll_counts"]
        with daemon(config, tmp_path / "daemon.log") as (proc, started):
            healthy_s = until(lambda: get(metrics_url + "/healthz", timeout=1)[0] == 200, 30)
            assert healthy_s is not None, (tmp_path / "daemon.log").read_text()
            listening_s = time.monotonic() - started
            status, body = get(metrics_url + "/readyz")
            assert (status, body.split(":")[1].strip()) == (503, "restoring state"), body
            _, text = get(metrics_url + "/metrics")
            assert metric_samples(text, LOADED) == [({}, 0.0)]
            assert not metric_samples(text, "exposure_monitor_allowance_unlimited")
            assert "loading the stored state" in get(metrics_url + "/")[1]
            # The restore waits on the price API; no poll may start meanwhile.
            assert simulator_state(base_url)["poll_counts"] == polls_before
            # The listener came up while the restore was held, not after it: the hang is
            # still running. How fast it came up (< 2 s) is the benchmark's figure ("daemon
            # start to listening"), not a timed assertion here: this suite runs on shared,
            # loaded machines, where it read 2.07-2.19 s against 0.57 s idle.
            assert listening_s < PRICE_HANG_S, f"/healthz answered {listening_s:.2f}s after start"
            wait_for(lambda: get(metrics_url + "/readyz")[0] == 200, 60, "/readyz to turn 200")
            _, text = get(metrics_url + "/metrics")
            assert metric_samples(text, LOADED) == [({}, 1.0)]
            assert metric_samples(text, "exposure_monitor_allowance_unlimited")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=40) == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log
    print(f"\n/healthz answered {listening_s:.2f}s after the process started")


@pytest.mark.slow
def test_run_retries_a_database_it_cannot_open_and_becomes_ready_once_it_can(
    tmp_path: Path,
) -> None:
    with simulator_process() as base_url:
        config, metrics_url = write_config(tmp_path / "config.yaml", base_url)
        doc = yaml.safe_load(config.read_text())
        folder = tmp_path / "created-later"
        doc["database"] = {"url": f"sqlite+aiosqlite:///{folder / 'monitor.sqlite'}"}
        config.write_text(yaml.safe_dump(doc))
        log = tmp_path / "daemon.log"
        with daemon(config, log) as (proc, _):
            wait_for(lambda: get(metrics_url + "/healthz")[0] == 200, 30, "the listener")
            wait_for(
                lambda: "unable to open database file" in get(metrics_url + "/readyz")[1],
                30,
                "/readyz to say why",
            )
            status, body = get(metrics_url + "/readyz")
            assert status == 503 and "restoring state" in body, body
            assert proc.poll() is None, log.read_text()
            folder.mkdir()
            wait_for(lambda: get(metrics_url + "/readyz")[0] == 200, 60, "/readyz to turn 200")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=40) == 0
    text = log.read_text()
    assert "stored state not loaded (attempt 1)" in text
    assert "Traceback" not in text
