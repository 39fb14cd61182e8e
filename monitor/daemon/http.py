"""The HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz`` and the status page ``/``.

Every handler reads the current ``MonitorView`` and nothing else: no handler awaits the 1inch
API or the database, so a stuck upstream or database never blocks a scrape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor import __version__
from monitor.daemon.metrics import StateText, gzip_compress
from monitor.daemon.view import MonitorView
from monitor.domain.addresses import to_checksum
from monitor.timespec import iso

Clock = Callable[[], datetime]


def make_app(
    *,
    registry: CollectorRegistry,
    view: Callable[[], MonitorView],
    state_text: Callable[[], StateText],
    clock: Clock,
    ready_max_age_s: float,
    users: Mapping[str, bytes] | None = None,
) -> web.Application:
    """The aiohttp application serving the daemon's endpoints.

    ``/metrics`` is the live counters of ``registry`` followed by the state metrics that
    were rendered when the current view was published (``state_text``).
    """
    app = web.Application(middlewares=[basic_auth_middleware(users)] if users else [])

    async def metrics(request: web.Request) -> web.StreamResponse:
        return await serve_metrics(request, generate_latest(registry), state_text())

    app.router.add_get("/metrics", metrics)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
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
        return web.Response(text=render_status(view(), clock()), content_type="text/html")

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


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _usd(value: Decimal) -> str:
    return f"${value:,.2f}"


def render_status(view: MonitorView, now: datetime) -> str:
    """The status page. Everything from upstream (symbols, names) is escaped."""

    def wallet_name(wallet: str) -> str:
        return view.wallet_labels.get(wallet) or to_checksum(wallet)

    def spender_name(chain_id: int, spender: str) -> str:
        return view.spender_labels.get((chain_id, spender)) or to_checksum(spender)

    def symbol(chain_id: int, token: str | None) -> str:
        if token is None:
            return ""
        found = view.tokens.get((chain_id, token))
        return found.symbol if found and found.symbol else to_checksum(token)

    open_findings = [f for f in view.findings if not f.suppressed]
    suppressed = [f for f in view.findings if f.suppressed]
    rows = []
    for f in open_findings + suppressed:
        rows.append(
            "<tr class='{cls}'><td>{sev}</td><td>{rule}</td><td>{chain}</td><td>{wallet}</td>"
            "<td>{spender}</td><td>{token}</td><td>{detail}</td></tr>".format(
                cls="suppressed" if f.suppressed else _e(f.severity),
                sev=_e(f.severity) + (" (suppressed)" if f.suppressed else ""),
                rule=_e(f.rule),
                chain=_e(f.chain_id),
                wallet=_e(wallet_name(f.wallet)),
                spender=_e(spender_name(f.chain_id, f.spender)),
                token=_e(symbol(f.chain_id, f.token)),
                detail=_e(f.detail),
            )
        )
    exposures = sorted(view.exposures, key=lambda e: e.at_risk_usd, reverse=True)
    exposure_rows = [
        "<tr><td>{chain}</td><td>{wallet}</td><td>{spender}</td><td class='num'>{usd}</td>"
        "<td>{missing}</td></tr>".format(
            chain=_e(e.chain_id),
            wallet=_e(wallet_name(e.wallet)),
            spender=_e(spender_name(e.chain_id, e.spender)),
            usd=_e(_usd(e.at_risk_usd)),
            missing=_e(", ".join(symbol(e.chain_id, t) for t in e.missing_prices) or "-"),
        )
        for e in exposures
    ]
    chains = sorted({c for c, _ in view.last_success} | set(view.upstream_up))
    poll_rows = []
    for chain_id in chains:
        times = [t for (c, _), t in view.last_success.items() if c == chain_id]
        newest = max(times) if times else None
        up = view.upstream_up.get(chain_id)
        poll_rows.append(
            "<tr><td>{chain}</td><td>{when}</td><td>{age}</td><td>{up}</td></tr>".format(
                chain=_e(chain_id),
                when=_e(iso(newest)) if newest else "never",
                age=_e(f"{(now - newest).total_seconds():.0f}s ago") if newest else "-",
                up="up" if up else ("down" if up is not None else "unknown"),
            )
        )
    total = sum((e.at_risk_usd for e in view.exposures), Decimal(0))
    return _PAGE.format(
        version=_e(__version__),
        now=_e(iso(now)),
        last_poll=_e(iso(view.last_poll_at)) if view.last_poll_at else "no poll yet",
        outcome=_e(view.last_poll_outcome or "-"),
        total=_e(_usd(total)),
        open_count=len(open_findings),
        findings="\n".join(rows) or "<tr><td colspan='7'>no findings</td></tr>",
        exposures="\n".join(exposure_rows) or "<tr><td colspan='5'>nothing at risk</td></tr>",
        polls="\n".join(poll_rows) or "<tr><td colspan='4'>no poll yet</td></tr>",
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="30">
<title>exposure-monitor</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
td.num {{ text-align: right; }}
tr.critical td {{ background: #fdd; }} tr.warning td {{ background: #ffd; }}
tr.suppressed td {{ color: #888; }}
</style></head>
<body>
<h1>exposure-monitor</h1>
<p>version {version} &middot; now {now} &middot; last poll {last_poll} ({outcome}) &middot;
<a href="/metrics">/metrics</a> &middot; <a href="/readyz">/readyz</a></p>
<h2>Value at risk: {total}</h2>
<table><tr><th>chain</th><th>wallet</th><th>spender</th><th>at risk (USD)</th>
<th>unpriced tokens</th></tr>
{exposures}
</table>
<h2>Open findings ({open_count})</h2>
<table><tr><th>severity</th><th>rule</th><th>chain</th><th>wallet</th><th>spender</th>
<th>token</th><th>detail</th></tr>
{findings}
</table>
<h2>Last successful poll per chain</h2>
<table><tr><th>chain</th><th>last success</th><th>age</th><th>upstream</th></tr>
{polls}
</table>
</body></html>
"""


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
