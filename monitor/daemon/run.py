"""``exposure-monitor run``: the service's lifecycle.

Start-up: start the HTTP listener and tell systemd ``READY=1``; then, in the background, open
the database (migrating under a lock when configured) and restore the stored state into the
view, retrying while the database fails (``monitor.daemon.startup``); then start the
scheduler. Shutdown on SIGTERM or SIGINT, at any point: tell systemd ``STOPPING=1``, stop
scheduling, give the in-flight poll until ``poll.shutdown_grace_s`` to finish (a restore still
running is cancelled), close everything in reverse order. Signal handlers are installed here
and removed on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, disable_created_metrics

from monitor import __version__
from monitor.config import ApiKey, Config
from monitor.daemon.http import make_app
from monitor.daemon.metrics import DiscoveryCollector, Instruments
from monitor.daemon.notify import SystemdNotifier
from monitor.daemon.startup import (
    Backoff,
    Progressing,
    Startup,
    StateLoadedCollector,
    retrying,
)
from monitor.errors import ListenError
from monitor.ports import utc_now

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from monitor.chain.source import ChainStatus
    from monitor.daemon.poll_cycle import Monitor
    from monitor.oneinch.client import BalanceClient, RequestRecord

log = logging.getLogger(__name__)


_ENGINE_MODULES = ("monitor.runtime", "monitor.daemon.poll_cycle", "apscheduler.schedulers.asyncio")
"""What the listener does not need: the store (SQLAlchemy, Alembic, the drivers), the poll
cycle and APScheduler, about a second of imports on a small machine. They are imported in a
worker thread once the listener answers, so /healthz does not wait for them; the functions
below then import their names from ``sys.modules`` at no cost."""


def _import_the_engine() -> None:
    for name in _ENGINE_MODULES:
        importlib.import_module(name)


async def run_daemon(
    config: Config,
    api_key: ApiKey | None,
    *,
    environ: Mapping[str, str] | None = None,
    on_listening: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set).

    Raises ``ListenError`` when ``metrics.listen`` cannot be bound. ``backoff``: between
    attempts to load the stored state while the database fails (default ``Backoff()``).
    """
    daemon = Daemon(
        config,
        api_key,
        environ=os.environ if environ is None else environ,
        on_listening=on_listening,
        stop=stop or asyncio.Event(),
        backoff=backoff or Backoff(),
    )
    await daemon.run()


class Daemon:
    """The service's lifecycle, as uvicorn's ``Server``: start-up, main loop, shutdown.

    Start-up binds the listener first and tells systemd ``READY=1``, then loads the stored
    state in the background (``monitor.daemon.startup``): the process answers ``/healthz``
    within moments whatever the portfolio size, and ``/readyz`` says when the state is
    loaded. Only then does the scheduler start, so the first poll compares with that state.
    """

    def __init__(
        self,
        config: Config,
        api_key: ApiKey | None,
        *,
        environ: Mapping[str, str],
        on_listening: Callable[[str], None] | None,
        stop: asyncio.Event,
        backoff: Backoff,
    ) -> None:
        self._config = config
        self._api_key = api_key
        self._notifier = SystemdNotifier(environ)
        self._on_listening = on_listening
        self._stop = stop
        self._backoff = backoff
        # No *_created series: they double the counters and histograms on /metrics, and
        # Prometheus (without created-timestamp ingestion, off by default) stores them as
        # plain gauges nobody queries. A process-wide switch in prometheus_client, set by the
        # runtime.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._registry = CollectorRegistry(auto_describe=True)
        self._instruments = Instruments(self._registry, version=__version__)
        self.startup = Startup()
        self._registry.register(StateLoadedCollector(self.startup))
        self._monitor: Monitor | None = None
        self._registry.register(DiscoveryCollector(self._discovery_status))
        self._watchdog: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
            installed.append(sig)
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._listen(stack)
                # Ready once listening: the state follows in the background, and /readyz,
                # not systemd, says when it is loaded (see systemd/exposure-monitor.service).
                self._notifier.ready()
                self._notifier.status("restoring state")
                self._watchdog = asyncio.create_task(
                    _watchdog(self._notifier, self.startup, self._config)
                )
                try:
                    monitor = await self._until_stopped(self._load_state(stack))
                    if monitor is not None:
                        await self._main_loop(monitor)
                finally:
                    self._watchdog.cancel()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    # -- start-up -----------------------------------------------------------------------------

    async def _listen(self, stack: contextlib.AsyncExitStack) -> None:
        config = self._config
        web_config = config.metrics.web
        app = make_app(
            registry=self._registry,
            view=lambda: self._loaded().view,
            state_text=lambda: self._loaded().state_text,
            clock=utc_now,
            ready_max_age_s=config.poll.interval_s * config.metrics.ready_after_intervals,
            users=web_config.users if web_config else None,
            loading=self.startup.waiting_for,
            discovery=self._discovery_status,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        tls = web_config.ssl_context if web_config else None
        site = web.TCPSite(runner, config.metrics.host, config.metrics.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError.from_os_error(
                "metrics.listen", config.metrics.host, config.metrics.port, exc
            ) from None
        url = _site_url(site, "https" if tls else "http")
        log.info("listening on %s", url)
        if self._on_listening is not None:
            self._on_listening(url)

    def _discovery_status(self) -> tuple[ChainStatus, ...]:
        """The chain reader's live status per chain; none until the state is loaded."""
        return self._monitor.discovery_status() if self._monitor is not None else ()

    def _loaded(self) -> Monitor:
        if self._monitor is None:  # the endpoints ask only once Startup says it is loaded
            raise RuntimeError("the stored state is not loaded yet")
        return self._monitor

    async def _until_stopped(self, loading: Coroutine[None, None, Monitor]) -> Monitor | None:
        """The loaded ``Monitor``, or None when asked to stop first (loading is cancelled)."""
        task = asyncio.create_task(loading)
        stopped = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                self._stopping("stopping before the stored state is loaded")
                task.cancel()
            await asyncio.gather(task, stopped, return_exceptions=True)
        if task.cancelled():
            return None
        return task.result()  # a bug while loading ends the daemon, loudly

    async def _load_state(self, stack: contextlib.AsyncExitStack) -> Monitor:
        self.startup.step("loading the program")
        await asyncio.to_thread(_import_the_engine)
        from monitor.runtime import open_client

        instruments = self._instruments

        def count_request(record: RequestRecord) -> None:
            instruments.api_requests.labels(endpoint=record.endpoint, code=record.code).inc()
            instruments.api_request_duration.labels(endpoint=record.endpoint).observe(
                record.duration_s
            )

        # A session only: no request is made before the restore asks for prices.
        client = await stack.enter_async_context(
            open_client(self._config, self._api_key, on_request=count_request)
        )
        started = time.monotonic()
        monitor = await retrying(
            lambda: self._restore(stack, client),
            self.startup,
            backoff=self._backoff,
            on_failure=self._notifier.status,
        )
        self._monitor = monitor
        self.startup.loaded_into(monitor)
        log.info("stored state loaded in %.1fs", time.monotonic() - started)
        return monitor

    async def _restore(self, stack: contextlib.AsyncExitStack, client: BalanceClient) -> Monitor:
        """One attempt: open the database, restore the state. What it opened is closed if it
        fails, and handed to ``stack`` (closed at exit) if it succeeds."""
        from monitor.daemon.poll_cycle import make_monitor
        from monitor.runtime import open_store

        async with contextlib.AsyncExitStack() as attempt:
            self.startup.step("opening the database")
            store = await attempt.enter_async_context(open_store(self._config))
            monitor = make_monitor(
                self._config,
                self._api_key,
                client=client,
                store=store,
                instruments=self._instruments,
                clock=utc_now,
            )
            self.startup.step("loading the stored state")
            await monitor.restore()
            stack.push_async_callback(attempt.pop_all().aclose)
        return monitor

    def _stopping(self, message: str) -> None:
        """Shutdown begins: no watchdog ping may follow ``STOPPING=1``."""
        log.info(message)
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._notifier.stopping()

    # -- main loop and shutdown ---------------------------------------------------------------

    async def _main_loop(self, monitor: Monitor) -> None:
        scheduler = _scheduler(self._config, monitor, self._instruments)
        scheduler.start()
        self._notifier.status("polling")
        try:
            await self._stop.wait()
        finally:
            self._stopping("stopping")
            await _shutdown(scheduler, monitor, self._config.poll.shutdown_grace_s)


def _site_url(site: web.TCPSite, scheme: str) -> str:
    server = site._server  # the bound socket tells the real port when 0 was asked for
    sockets = getattr(server, "sockets", None) or []
    host, port = sockets[0].getsockname()[:2] if sockets else ("?", 0)
    return f"{scheme}://[{host}]:{port}" if ":" in str(host) else f"{scheme}://{host}:{port}"


def _scheduler(config: Config, monitor: Monitor, instruments: Instruments) -> AsyncIOScheduler:
    from apscheduler.events import (
        EVENT_JOB_ERROR,
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
        JobExecutionEvent,
    )
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    events = {
        EVENT_JOB_MISSED: "missed",
        EVENT_JOB_ERROR: "errored",
        EVENT_JOB_MAX_INSTANCES: "skipped",
    }
    interval_s = config.poll.interval_s
    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        monitor.poll_cycle,
        "interval",
        seconds=interval_s,
        jitter=config.poll.jitter_s or None,
        next_run_time=utc_now(),
        id="poll",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, int(interval_s / 2)),
    )
    scheduler.add_job(
        monitor.prune,
        "interval",
        hours=24,
        id="prune",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
    )

    def on_event(event: JobExecutionEvent) -> None:
        name = events.get(event.code)
        if name is not None:
            instruments.scheduler_events.labels(event=name).inc()
            log.warning("scheduler: job %s %s", event.job_id, name)

    scheduler.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES)
    return scheduler


async def _shutdown(scheduler: AsyncIOScheduler, monitor: Monitor, grace_s: float) -> None:
    """Stop scheduling, then let the in-flight poll finish until the grace period ends.

    Pause first and shut down after the drain: APScheduler 3's asyncio executor cancels the
    jobs it is running as soon as it is shut down, which would leave no grace at all.
    """
    scheduler.pause()
    if not await monitor.drain(grace_s):
        log.warning("in-flight poll did not finish within %.0fs; cancelled", grace_s)
    scheduler.shutdown(wait=False)


async def _watchdog(notifier: SystemdNotifier, monitor: Progressing, config: Config) -> None:
    """Ping systemd's watchdog only while polls keep finishing (while start-up moves on, until
    the state is loaded: ``Startup.last_progress_monotonic``)."""
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    allowed_s = config.poll.interval_s + config.poll.timeout_s + (config.poll.jitter_s or 0) + 30
    while True:
        if time.monotonic() - monitor.last_progress_monotonic <= allowed_s:
            notifier.watchdog()
        else:
            log.error("no poll has finished for %.0fs: not pinging the watchdog", allowed_s)
        await asyncio.sleep(interval / 3)
