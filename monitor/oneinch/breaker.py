"""A circuit breaker for the one host a client talks to: fail fast while it cannot be reached.

The rule: ``open_after`` (3) connection-level failures in a row (refused, DNS failure, TLS
handshake: aiohttp's ``ClientConnectorError`` family) with no answer from the host since open
the breaker. Any HTTP answer, whatever its status, closes it and clears the count; timeouts
neither count nor clear (a host that is slow is not a host that is gone).

While open (``cool_down_s`` after the failure that opened it or the last one: 30 s, or the
poll interval when shorter, see ``monitor.runtime.open_client``), every request fails at once
with ``HostUnreachable``: no connection, no retry, no backoff sleep, no rate-limiter slot; a
wait begun since the first of those failures (a slot, a backoff) ends early when it opens
(``opened``). After the cool-down the breaker is half-open: requests go out again; the first
answer closes it, the first connection-level failure opens it again at once. So a daemon
polling a dead host spends about one refused connection per poll, and its first poll after
the host is back succeeds.

A client talks to one host (its ``base_url``), so it holds one breaker.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import time
from collections.abc import Callable

import aiohttp
import yarl

from monitor.errors import HostUnreachable

log = logging.getLogger(__name__)

BREAKER_COOL_DOWN_S = 30.0
"""How long an open breaker fails requests at once before it lets one through again."""


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url``, the port always spelled out."""
    parsed = yarl.URL(url)
    host = parsed.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parsed.scheme}://{host}:{parsed.port}"


def connection_failure_cause(exc: aiohttp.ClientConnectorError) -> str:
    """A few words for what went wrong: ``connection refused``, ``name not resolved (...)``."""
    os_error = exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"name not resolved ({os_error.strerror or type(os_error).__name__})"
    if os_error.errno == errno.ECONNREFUSED:
        return "connection refused"
    if os_error.errno:
        return os.strerror(os_error.errno).lower()
    return type(exc).__name__


class HostBreaker:
    """The breaker of one host (see the module docstring for the rule)."""

    def __init__(
        self,
        origin: str,
        *,
        open_after: int = 3,
        cool_down_s: float = BREAKER_COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if open_after < 1:
            raise ValueError(f"open_after must be at least 1, got {open_after}")
        if not 0 <= cool_down_s < math.inf:
            raise ValueError(f"cool_down_s must be 0 or more, got {cool_down_s}")
        self.origin = origin
        self.open_after = open_after
        self.cool_down_s = cool_down_s
        self._clock = clock
        self.failures = 0
        """Connection-level failures in a row since the last answer."""
        self.cause = ""
        """What the last of them was (``connection refused``)."""
        self._open_until = -math.inf
        self.opened = asyncio.Event()
        """Set while open: a wait that should end when the breaker opens waits on it too."""

    @property
    def suspect(self) -> bool:
        """A connection-level failure since the last answer: the breaker may open."""
        return self.failures > 0

    def is_open(self) -> bool:
        """Whether requests must fail at once; past the cool-down this turns half-open."""
        if self._clock() < self._open_until:
            return True
        if self.opened.is_set():
            self.opened.clear()
            log.info("trying %s again after its cool-down", self.origin)
        return False

    def failed(self, cause: str) -> None:
        """A connection-level failure; opens the breaker at the ``open_after``-th in a row."""
        self.failures += 1
        self.cause = cause
        if self.failures < self.open_after:
            return
        self._open_until = self._clock() + self.cool_down_s
        if not self.opened.is_set():
            self.opened.set()
            log.info(
                "%s unreachable (%s, %d times in a row): requests to it fail at once for %gs",
                self.origin,
                cause,
                self.failures,
                self.cool_down_s,
            )

    def answered(self) -> None:
        """An HTTP answer of any status: the host is there."""
        if self.failures >= self.open_after:
            log.info("%s answers again", self.origin)
        self.failures = 0
        self._open_until = -math.inf
        self.opened.clear()

    def error(self, *, endpoint: str, attempts: int) -> HostUnreachable:
        """The error of a request failed by the open breaker."""
        return HostUnreachable(
            self.origin,
            self.cause,
            self.failures,
            self.cool_down_s,
            endpoint=endpoint,
            attempts=attempts,
        )
