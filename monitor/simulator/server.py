"""The simulator as an aiohttp application, its control endpoints, and a runner for tests.

``make_app`` builds the application (the CLI runs it with its own ``web.AppRunner``);
``run_simulator`` starts it on a local port and yields a ``RunningSimulator`` handle. Every
request to a 1inch path goes through one middleware, in this order: ``X-Request-Id`` assigned,
API key checked (401), rate limit (429), route and validation (400/404/405), faults, answer;
then the request is recorded. The control endpoints under ``/_simulator/`` skip all of it.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from monitor.domain.addresses import is_address
from monitor.errors import ConfigError, ListenError
from monitor.simulator.answers import ApiError, error_payload
from monitor.simulator.balance_api import add_balance_routes
from monitor.simulator.faults import Fault, parse_fault
from monitor.simulator.model import Scenario
from monitor.simulator.price_api import add_price_routes
from monitor.simulator.state import (
    CLIENT_GONE,
    RECEIVED_AT,
    REQUEST_ID,
    STATE,
    RecordedRequest,
    SimulatorState,
)
from monitor.simulator.web3_api import WEB3, add_web3_routes

__all__ = ["RecordedRequest", "RunningSimulator", "make_app", "run_simulator"]

CONTROL_PREFIX = "/_simulator/"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(
    scenario: Scenario,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> web.Application:
    """The simulator application for ``scenario``.

    ``clock`` (seconds, monotonic) drives ``at_s`` timeline events, the rate limiter and the
    recorded arrival times; the simulator's start is the clock's value now. ``wall_clock``
    (unix seconds) dates the Web3 RPC API's blocks: step 1's head is its value now.
    """
    app = web.Application(middlewares=[_api_middleware])
    app[STATE] = SimulatorState(scenario, clock)
    add_balance_routes(app)
    add_price_routes(app)
    add_web3_routes(app, anchor_unix=wall_clock())
    app.router.add_post(f"{CONTROL_PREFIX}faults", _add_fault)
    app.router.add_delete(f"{CONTROL_PREFIX}faults", _clear_faults)
    app.router.add_get(f"{CONTROL_PREFIX}state", _state)
    app.on_shutdown.append(_wake_sleepers)
    return app


async def _wake_sleepers(app: web.Application) -> None:
    app[STATE].close()


@web.middleware
async def _api_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    state = request.app[STATE]
    request_id = str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    request[RECEIVED_AT] = state.clock()
    status = 499
    try:
        response = await _serve(request, handler, state)
        status = 499 if request.get(CLIENT_GONE) else response.status
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response
    finally:
        state.requests.append(
            RecordedRequest(
                received_at=request[RECEIVED_AT],
                method=request.method,
                path=request.path,
                query_string=_masked(request.query_string),
                status=status,
                authorization_present="Authorization" in request.headers,
                request_id=request_id,
            )
        )


async def _serve(
    request: web.Request, handler: _Handler, state: SimulatorState
) -> web.StreamResponse:
    scenario = state.scenario
    try:
        if scenario.api_key is not None and not _authorized(request, scenario.api_key):
            raise ApiError("missing or invalid API key (Authorization: Bearer <key>)", status=401)
        if state.limiter is not None and not state.limiter.admit(request[RECEIVED_AT]):
            retry = scenario.retry_after_s
            raise ApiError(
                "rate limit exceeded",
                status=429,
                headers={} if retry is None else {"Retry-After": str(retry)},
            )
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            description = (
                f"Cannot {request.method} {request.path}"
                if exc.status in (404, 405)
                else exc.reason
            )
            raise ApiError(description, status=exc.status, headers=dict(exc.headers)) from None
    except ApiError as exc:
        body = error_payload(
            scenario.behaviour, exc.status, exc.description, request[REQUEST_ID], exc.meta
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return web.json_response(body, status=exc.status, headers=headers)


def _authorized(request: web.Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), api_key.encode())


def _masked(query_string: str) -> str:
    """The query string with any ``apiKey`` value replaced, so no log or record holds it."""
    if "apikey" not in query_string.lower():
        return query_string
    pairs = parse_qsl(query_string, keep_blank_values=True)
    return urlencode([(k, "***" if k.lower() == "apikey" else v) for k, v in pairs], safe=",")


# --- control endpoints -----------------------------------------------------------------------


async def _add_fault(request: web.Request) -> web.Response:
    """POST /_simulator/faults with a JSON fault (the scenario file's ``faults`` item)."""
    try:
        data = json.loads(await request.read())
        fault = parse_fault(data, "fault")
    except ValueError as exc:
        return web.json_response({"error": f"the body must be JSON: {exc}"}, status=400)
    except ConfigError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    state = request.app[STATE]
    state.faults.add(fault)
    return web.json_response(
        {"fault": fault.to_json(), "active": len(state.faults.active())}, status=201
    )


async def _clear_faults(request: web.Request) -> web.Response:
    """DELETE /_simulator/faults: remove every active fault."""
    return web.json_response({"cleared": request.app[STATE].faults.clear()})


async def _state(request: web.Request) -> web.Response:
    """GET /_simulator/state: request counts, poll counters and active faults."""
    state = request.app[STATE]
    statuses: dict[str, int] = {}
    for recorded in state.requests:
        statuses[str(recorded.status)] = statuses.get(str(recorded.status), 0) + 1
    return web.json_response(
        {
            "requests": len(state.requests),
            "responses_by_status": statuses,
            "elapsed_s": state.elapsed_s(state.clock()),
            "poll_counts": state.polls.snapshot(),
            "web3_heads": request.app[WEB3].heads(),
            "faults": state.faults.active(),
        }
    )


# --- running it ------------------------------------------------------------------------------


class RunningSimulator:
    """A simulator serving on a local port (see ``run_simulator``)."""

    def __init__(self, app: web.Application, base_url: str) -> None:
        self._app = app
        self._state = app[STATE]
        self._base_url = base_url

    @property
    def base_url(self) -> str:
        """``http://host:port`` without a trailing slash; the 1inch paths are under it."""
        return self._base_url

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def scenario(self) -> Scenario:
        return self._state.scenario

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to a 1inch path so far, in the order they were answered."""
        return list(self._state.requests)

    def add_fault(self, fault: Fault) -> None:
        """Activate ``fault`` after the faults already active."""
        self._state.faults.add(fault)

    def clear_faults(self) -> int:
        """Remove every active fault (the scenario's too); return how many there were."""
        return self._state.faults.clear()

    def active_faults(self) -> list[dict[str, object]]:
        """The active faults with their remaining uses, as JSON."""
        return self._state.faults.active()

    def head_block(self, chain_id: int) -> int:
        """The Web3 RPC API's head block of ``chain_id`` (a chain of the scenario)."""
        history = self._app[WEB3].history(chain_id)
        if history is None:
            raise ValueError(f"chain {chain_id} is not in the scenario")
        return history.head()

    def chain_step(self, chain_id: int) -> int:
        """The Web3 RPC API's step of ``chain_id``: ``eth_blockNumber`` answers served (the
        chain's poll count), at least 1."""
        history = self._app[WEB3].history(chain_id)
        if history is None:
            raise ValueError(f"chain {chain_id} is not in the scenario")
        return history.step

    def poll_count(self, chain_id: int, spender: str, wallet: str) -> int:
        """Aggregated answers served for (chain, spender, wallet); addresses in any case."""
        if not is_address(spender) or not is_address(wallet):
            raise ValueError("spender and wallet must be addresses")
        return self._state.polls.count(chain_id, spender.lower(), wallet.lower())


@asynccontextmanager
async def run_simulator(
    scenario: Scenario,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] = time.monotonic,
    setting: str = "--listen",
) -> AsyncIterator[RunningSimulator]:
    """Serve ``scenario`` on ``host:port`` (port 0: any free port) until the block exits.

    Raises ``ListenError`` naming ``setting`` (where the address came from) when the address
    cannot be bound.
    """
    app = make_app(scenario, clock=clock)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError.from_os_error(setting, host, port, exc) from None
        bound_host, bound_port = runner.addresses[0][:2]
        yield RunningSimulator(app, _base_url(str(bound_host), int(bound_port)))
    finally:
        await runner.cleanup()


def _base_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104 (reachable through loopback)
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
