"""``exposure-monitor run``: the service's lifecycle.

Start-up: open the database (migrating under a lock when configured), restore the stored
state into the view, start the HTTP listener, start the scheduler, then tell systemd
``READY=1``. Shutdown on SIGTERM or SIGINT: stop scheduling, give the in-flight poll until
``poll.shutdown_grace_s`` to finish, tell systemd ``STOPPING=1``, close everything in reverse
order. Signal handlers are installed here and removed on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from datetime import UTC

from aiohttp import web
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, disable_created_metrics

from monitor import __version__
from monitor.config import ApiKey, Config
from monitor.daemon.http import make_app
from monitor.daemon.metrics import Instruments
from monitor.daemon.notify import SystemdNotifier
from monitor.daemon.service import Monitor, build_monitor
from monitor.errors import ListenError
from monitor.oneinch.client import RequestRecord
from monitor.ports import utc_now
from monitor.runtime import open_client, open_store

log = logging.getLogger(__name__)

_SCHEDULER_EVENTS = {
    EVENT_JOB_MISSED: "missed",
    EVENT_JOB_ERROR: "errored",
    EVENT_JOB_MAX_INSTANCES: "skipped",
}


async def run_daemon(
    config: Config,
    api_key: ApiKey | None,
    *,
    environ: Mapping[str, str] | None = None,
    on_listening: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set).

    Raises ``ListenError`` when ``metrics.listen`` cannot be bound.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    notifier = SystemdNotifier(os.environ if environ is None else environ)
    # No *_created series: they double the counters and histograms on /metrics, and
    # Prometheus (without created-timestamp ingestion, off by default) stores them as plain
    # gauges nobody queries. A process-wide switch in prometheus_client, set by the runtime.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    instruments = Instruments(registry, version=__version__)
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
        installed.append(sig)
    try:
        async with contextlib.AsyncExitStack() as stack:
            store = await stack.enter_async_context(open_store(config))

            def count_request(record: RequestRecord) -> None:
                instruments.api_requests.labels(endpoint=record.endpoint, code=record.code).inc()
                instruments.api_request_duration.labels(endpoint=record.endpoint).observe(
                    record.duration_s
                )

            client = await stack.enter_async_context(
                open_client(config, api_key, on_request=count_request)
            )
            monitor = build_monitor(
                config, client=client, store=store, instruments=instruments, clock=utc_now
            )
            await monitor.restore()

            web_config = config.metrics.web
            app = make_app(
                registry=registry,
                view=lambda: monitor.view,
                state_text=lambda: monitor.state_text,
                clock=utc_now,
                ready_max_age_s=config.poll.interval_s * config.metrics.ready_after_intervals,
                users=web_config.users if web_config else None,
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
            if on_listening is not None:
                on_listening(url)

            scheduler = _scheduler(config, monitor, instruments)
            scheduler.start()
            notifier.ready()
            notifier.status("polling")
            watchdog = asyncio.create_task(_watchdog(notifier, monitor, config))
            try:
                await stop.wait()
            finally:
                log.info("stopping")
                notifier.stopping()
                watchdog.cancel()
                await _shutdown(scheduler, monitor, config.poll.shutdown_grace_s)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _site_url(site: web.TCPSite, scheme: str) -> str:
    server = site._server  # the bound socket tells the real port when 0 was asked for
    sockets = getattr(server, "sockets", None) or []
    host, port = sockets[0].getsockname()[:2] if sockets else ("?", 0)
    return f"{scheme}://[{host}]:{port}" if ":" in str(host) else f"{scheme}://{host}:{port}"


def _scheduler(config: Config, monitor: Monitor, instruments: Instruments) -> AsyncIOScheduler:
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
        name = _SCHEDULER_EVENTS.get(event.code)
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


async def _watchdog(notifier: SystemdNotifier, monitor: Monitor, config: Config) -> None:
    """Ping systemd's watchdog only while polls keep finishing."""
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
