"""The HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz`` and the status page ``/``.

Every handler reads the current ``MonitorView`` and nothing else: no handler awaits the 1inch
API or the database, so a stuck upstream or database never blocks a scrape. The listener
starts before the stored state is loaded (``monitor.daemon.startup``): until then the
handlers read no view at all and say so.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import html
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.daemon.metrics import StateText, gzip_compress
from monitor.daemon.status_page import render_status
from monitor.daemon.view import MonitorView
from monitor.ports import Clock

if TYPE_CHECKING:
    from monitor.chain.source import ChainStatus

__all__ = ["OPEN_PATHS", "accepts_gzip", "basic_auth_middleware", "make_app", "render_status"]

STATUS_PAGE_HEADERS = {
    # The page runs no script and loads nothing: whatever slipped past escaping could not
    # act. Explorer links are followed without telling the explorer where they came from.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

NO_STATE = StateText(())
"""What ``/metrics`` adds to the registry before the stored state is loaded: nothing."""

LOADING_REFRESH_S = 2
"""The page shown while the stored state is loaded reloads itself this often."""

LOADING_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh_s}">
<title>exposure-monitor: loading the stored state</title>
</head>
<body>
<h1>exposure-monitor</h1>
<p>Loading the stored state. Polling starts once it is loaded.</p>
<p>{reason}</p>
<p>This page reloads every {refresh_s} s.</p>
</body>
</html>
"""


def _always_loaded() -> str | None:
    return None


def _no_discovery() -> Sequence[ChainStatus]:
    return ()


def make_app(
    *,
    registry: CollectorRegistry,
    view: Callable[[], MonitorView],
    state_text: Callable[[], StateText],
    clock: Clock,
    ready_max_age_s: float,
    users: Mapping[str, bytes] | None = None,
    loading: Callable[[], str | None] = _always_loaded,
    discovery: Callable[[], Sequence[ChainStatus]] = _no_discovery,
) -> web.Application:
    """The aiohttp application serving the daemon's endpoints.

    ``/metrics`` is the live counters of ``registry`` followed by the state metrics that
    were rendered when the current view was published (``state_text``).

    ``loading`` says why the stored state is not served yet (``restoring state: ...``), or
    None once it is; until then ``view`` and ``state_text`` are not called: ``/metrics`` is
    the registry alone (no position or finding series: unknown is not zero), ``/readyz``
    answers 503 with that reason, and ``/`` is a page saying the state is loading.
    ``/healthz`` answers 200 throughout.

    ``discovery`` is the chain reader's live per-chain status (``Monitor.discovery_status``),
    shown on the status page; the ``exposure_monitor_discovery_*`` series come from a
    ``DiscoveryCollector`` registered in ``registry``.
    """
    app = web.Application(middlewares=[basic_auth_middleware(users)] if users else [])

    async def metrics(request: web.Request) -> web.StreamResponse:
        state = NO_STATE if loading() is not None else state_text()
        return await serve_metrics(request, generate_latest(registry), state)

    app.router.add_get("/metrics", metrics)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        waiting = loading()
        if waiting is not None:
            return web.Response(status=503, text=f"not ready: {waiting}\n")
        newest = view().newest_success()
        if newest is None:
            return web.Response(status=503, text="not ready: no successful poll yet\n")
        age_s = (clock() - newest).total_seconds()
        if age_s > ready_max_age_s:
            limit = f"limit {ready_max_age_s:.0f}s"
            return web.Response(
                status=503, text=f"not ready: last successful poll {age_s:.0f}s ago ({limit})\n"
            )
        return web.Response(text=f"ready: last successful poll {age_s:.0f}s ago\n")

    async def status_page(_: web.Request) -> web.Response:
        waiting = loading()
        if waiting is not None:
            page = LOADING_PAGE.format(
                reason=html.escape(waiting, quote=True), refresh_s=LOADING_REFRESH_S
            )
            return web.Response(text=page, content_type="text/html", headers=STATUS_PAGE_HEADERS)
        # Off the loop: a page of hundreds of rows is milliseconds of CPU scrapes need not wait.
        page = await asyncio.to_thread(render_status, view(), clock(), tuple(discovery()))
        return web.Response(text=page, content_type="text/html", headers=STATUS_PAGE_HEADERS)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", status_page)
    return app


async def serve_metrics(request: web.Request, live: bytes, state: StateText) -> web.StreamResponse:
    """Write ``live`` (the registry's few kilobytes) and then ``state``, never joined.

    A client that accepts gzip (Prometheus always does) gets ``live`` compressed as one gzip
    member followed by the state's members as they are kept: one gzip stream. Any other
    client gets the text, the state inflated piece by piece as it is written.
    """
    response = web.StreamResponse(
        headers={"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
    )
    chunks: Iterable[bytes]
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        head = gzip_compress(live)
        response.headers["Content-Encoding"] = "gzip"
        response.content_length = len(head) + state.gzip_size
        chunks = (head, *state.gzip_chunks())
    else:
        response.content_length = len(live) + state.text_size
        chunks = itertools.chain((live,), state.text_chunks())
    await response.prepare(request)
    if request.method != "HEAD":
        for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header names gzip with a non-zero weight (RFC 9110, 12.5.3)."""
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() not in ("gzip", "x-gzip"):
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


OPEN_PATHS = frozenset({"/healthz"})
"""Served without credentials, so that a liveness probe needs no secret."""


def basic_auth_middleware(users: Mapping[str, bytes]) -> Middleware:
    """Require one of ``users`` on every path but /healthz.

    bcrypt is slow on purpose (tens of milliseconds); a scrape every few seconds would pay it
    each time, so a successful check is remembered, keyed by a digest of the credentials.
    """
    verified: set[bytes] = set()

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in OPEN_PATHS or _authorised(
            request.headers.get("Authorization"), users, verified
        ):
            return await handler(request)
        return web.Response(
            status=401,
            text="unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="exposure-monitor"'},
        )

    return middleware


def _authorised(header: str | None, users: Mapping[str, bytes], verified: set[bytes]) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    hashed = users.get(user)
    if hashed is None:
        return False
    digest = hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + hashed).digest()
    if any(hmac.compare_digest(digest, known) for known in verified):
        return True
    try:
        ok = bcrypt.checkpw(password.encode(), hashed.replace(b"$2y$", b"$2b$", 1))
    except ValueError:
        return False
    if ok:
        verified.add(digest)
    return ok
