"""Start-up in the background: the listener answers at once, the stored state follows.

``run`` binds its listener before anything whose duration depends on the data or on another
service: opening (and migrating) the database, and restoring the state of earlier runs, which
reads the newest snapshot, evaluates the risk rules over it (asking the Spot Price API) and
renders the metrics. ``Startup`` is where that stands, for the endpoints: ``/healthz`` answers
as soon as the listener is bound, ``/readyz`` answers 503 with the reason (``restoring
state: ...``) until the state is loaded, ``/metrics`` exports ``exposure_monitor_state_loaded``
(0 until then, while the position and finding series are absent: unknown, not zero) and the
status page says it is loading the stored state. Polling starts only once the state is
loaded: the poll cycle compares with it.

A database that cannot be opened or read is retried with a doubling delay (``Backoff``),
each failure logged and shown on ``/readyz``, so that a database still starting at boot heals
without a restart; anything else is a bug and ends the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from monitor.errors import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

STATE_LOADED = "exposure_monitor_state_loaded"


class Progressing(Protocol):
    """What the watchdog reads: when something last finished (``time.monotonic``)."""

    @property
    def last_progress_monotonic(self) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Delays between attempts to load the stored state: ``initial_s``, doubling up to
    ``max_s``."""

    initial_s: float = 1.0
    max_s: float = 60.0

    def delay_s(self, failures: int) -> float:
        """The delay after the ``failures``-th failure in a row (1 for the first)."""
        return min(self.max_s, self.initial_s * 2.0 ** min(failures - 1, 64))


class Startup:
    """Where start-up stands. Written by the start-up task, read by the HTTP endpoints, the
    ``exposure_monitor_state_loaded`` gauge and the watchdog."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._step = "starting"
        self._problem: str | None = None
        self._progress_at = monotonic()
        self._running: Progressing | None = None

    @property
    def loaded(self) -> bool:
        return self._running is not None

    def waiting_for(self) -> str | None:
        """Why the stored state is not served yet (``restoring state: ...``), None once it
        is."""
        if self._running is not None:
            return None
        text = f"restoring state: {self._step}"
        return f"{text} ({self._problem})" if self._problem else text

    def step(self, what: str) -> None:
        """Start-up has begun ``what`` (``opening the database``...)."""
        self._step = what
        self._progress_at = self._monotonic()

    def failed(self, problem: str) -> None:
        """An attempt failed; ``problem`` says why and when the next one comes."""
        self._problem = problem
        self._progress_at = self._monotonic()

    def loaded_into(self, running: Progressing) -> None:
        """The state is loaded and served; from now on ``running`` (the poll cycle) is the
        watchdog's evidence of progress."""
        self._problem = None
        self._running = running

    @property
    def last_progress_monotonic(self) -> float:
        """When start-up last moved on (a step begun, an attempt failed); once the state is
        loaded, when the poll cycle last finished."""
        if self._running is not None:
            return self._running.last_progress_monotonic
        return self._progress_at


class StateLoadedCollector:
    """``exposure_monitor_state_loaded``, read from ``Startup`` at each scrape."""

    def __init__(self, startup: Startup) -> None:
        self._startup = startup

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            STATE_LOADED,
            "1 once the state recorded by earlier runs is loaded and served; 0 while it is"
            " restored (position, finding and freshness series are absent until then).",
            value=1.0 if self._startup.loaded else 0.0,
        )


DATABASE_FAILURES: tuple[type[BaseException], ...] = (StoreError, OSError)
"""Failures worth retrying at start-up. ``StoreError`` is what the store raises; a connection
refused can surface as a bare ``OSError`` (asyncpg) and a few reads may still let a
SQLAlchemy error through, which ``is_database_failure`` recognises by its module: this module
is imported before the listener binds, SQLAlchemy only after."""


def is_database_failure(exc: BaseException) -> bool:
    if isinstance(exc, DATABASE_FAILURES):
        return True
    return any(cls.__module__.startswith("sqlalchemy.") for cls in type(exc).__mro__)


def describe_failure(exc: BaseException) -> str:
    """One line: the store's message, or the first line of the driver's."""
    if isinstance(exc, StoreError):
        return str(exc)
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    startup: Startup,
    *,
    backoff: Backoff,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_failure: Callable[[str], None] | None = None,
) -> T:
    """``attempt()`` until it succeeds. A database failure is logged, shown through
    ``startup`` (and ``on_failure``, with the text ``/readyz`` gives) and retried after
    ``backoff``; anything else propagates."""
    failures = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not is_database_failure(exc):
                raise
            failures += 1
            delay_s = backoff.delay_s(failures)
            problem = describe_failure(exc)
            log.error(
                "stored state not loaded (attempt %d): %s; retrying in %.0fs",
                failures,
                problem,
                delay_s,
            )
            startup.failed(f"attempt {failures} failed: {problem}; retrying in {delay_s:.0f}s")
            if on_failure is not None:
                waiting = startup.waiting_for()
                if waiting is not None:
                    on_failure(waiting)
            await sleep(delay_s)
