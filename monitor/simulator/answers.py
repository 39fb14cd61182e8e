"""What every simulated 1inch route shares: request validation, error bodies, and answering.

Handlers validate as strictly as 1inch does (``ApiError`` -> 400), compute the real answer, and
hand it to ``respond``, which applies the first matching fault. Only a complete aggregated
answer that reached the client advances the poll counters (``on_served``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any

from aiohttp import web

from monitor.domain.addresses import is_address
from monitor.domain.chains import SUPPORTED_CHAINS
from monitor.domain.model import UINT256_MAX
from monitor.simulator import faults as fault_bodies
from monitor.simulator.faults import Fault, FaultTarget
from monitor.simulator.model import Behaviour, TokenSpec
from monitor.simulator.state import (
    CLIENT_GONE,
    RECEIVED_AT,
    REQUEST_ID,
    STATE,
    SimulatorState,
)


class ApiError(Exception):
    """A request the real API would refuse; rendered in the configured error-body shape."""

    def __init__(
        self,
        description: str,
        *,
        status: int = 400,
        meta: Sequence[tuple[str, object]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.status = status
        self.meta = tuple(meta)
        self.headers = headers or {}


def error_payload(
    behaviour: Behaviour,
    status: int,
    description: str,
    request_id: str,
    meta: Iterable[tuple[str, object]] = (),
) -> dict[str, object]:
    """An error body in the shape ``behaviour.error_body`` selects."""
    reason = status_phrase(status)
    if behaviour.error_body == "message":
        return {"statusCode": status, "message": description, "error": reason}
    return {
        "statusCode": status,
        "error": reason,
        "description": description,
        "meta": [{"type": kind, "value": value} for kind, value in meta],
        "requestId": request_id,
    }


def status_phrase(status: int) -> str:
    """The reason phrase of ``status`` ("Bad Gateway"), or "Error" for unregistered codes."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --- request parsing -------------------------------------------------------------------------


def parse_chain(request: web.Request) -> int:
    text = request.match_info["chain"]
    if not (text.isascii() and text.isdigit()) or int(text) not in SUPPORTED_CHAINS:
        raise ApiError(f"chain {text!r} is not supported", meta=[("chain", text)])
    return int(text)


def parse_address(text: object, what: str) -> str:
    if not is_address(text):
        raise ApiError(f"{what} is not a valid address: {text!r:.60}", meta=[("address", text)])
    assert isinstance(text, str)
    return text.lower()


def unique_addresses(spelled: Iterable[str], what: str) -> dict[str, str]:
    """Validated addresses, lowercase -> first spelling, in request order."""
    unique: dict[str, str] = {}
    for text in spelled:
        unique.setdefault(parse_address(text, what), text)
    return unique


def parse_wallets_query(request: web.Request, behaviour: Behaviour) -> dict[str, str]:
    values = request.query.getall("wallets", [])
    if not values:
        raise ApiError("wallets is required")
    if len(values) > 1 and behaviour.repeated_wallets == "reject":
        raise ApiError("wallets must be given once, as a comma-separated list")
    items = [item for value in values for item in value.split(",")]
    limit = behaviour.max_wallets_per_request
    if limit is not None and len(items) > limit:
        raise ApiError(f"too many wallets: {len(items)}, at most {limit} per request")
    return unique_addresses(items, "wallet")


def parse_filter_empty(request: web.Request) -> bool:
    values = request.query.getall("filterEmpty", [])
    if len(values) > 1:
        raise ApiError("filterEmpty must be given once")
    if not values:
        return False
    if values[0] not in ("true", "false"):
        raise ApiError(f"filterEmpty must be true or false, got {values[0]!r:.20}")
    return values[0] == "true"


async def read_json_body(request: web.Request) -> dict[str, object]:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ApiError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError("the body must be a JSON object")
    return body


def string_list(body: dict[str, object], key: str) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(f"{key} must be an array of strings")
    return value


def wallet_key(state: SimulatorState, wallet: str, spelled: str) -> str:
    case = state.scenario.behaviour.wallet_key_case
    if case == "checksum":
        return state.checksum(wallet)
    return wallet if case == "lower" else spelled


# --- answering -------------------------------------------------------------------------------


async def respond(
    request: web.Request,
    target: FaultTarget,
    payload: Any,
    on_served: Callable[[], None] | None = None,
) -> web.StreamResponse:
    """Serve ``payload`` (or the fault that matches ``target``); call ``on_served`` once a
    complete, correct answer has been handed to the client."""
    state = request.app[STATE]
    fault = state.faults.take(target)
    headers = {"X-Request-Id": request[REQUEST_ID]}
    if fault is None:
        response = web.json_response(payload, headers=headers)
    else:
        if fault.delay_s > 0:
            await state.sleep(fault.delay_s)
        status = fault.effective_status
        if fault.retry_after_s is not None:
            headers["Retry-After"] = str(fault.retry_after_s)
        response = _faulted(state, fault, status, payload, request[REQUEST_ID], headers)
    if on_served is None or (fault is not None and not fault.keeps_answer_complete):
        return response
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        request[CLIENT_GONE] = True  # this poll was not served
        return response
    on_served()
    return response


def _faulted(
    state: SimulatorState,
    fault: Fault,
    status: int,
    payload: Any,
    request_id: str,
    headers: dict[str, str],
) -> web.Response:
    kind = fault.body
    if kind == "error":
        body = error_payload(state.scenario.behaviour, status, "simulated fault", request_id)
        return web.json_response(body, status=status, headers=headers)
    if kind == "html":
        page = fault_bodies.HTML_PAGE.format(status=status, reason=status_phrase(status))
        return web.Response(text=page, status=status, headers=headers, content_type="text/html")
    if kind == "truncated":
        return web.Response(
            body=fault_bodies.truncated(payload),
            status=status,
            headers=headers,
            content_type="application/json",
        )
    if kind == "not_json":
        return web.Response(
            text=fault_bodies.NOT_JSON_TEXT,
            status=status,
            headers=headers,
            content_type="text/plain",
        )
    if kind == "non_numeric_amount":
        payload = fault_bodies.with_bad_amount(payload, fault.bad_amount)
    elif kind == "missing_fields":
        payload = fault_bodies.with_missing_fields(payload)
    elif kind == "extra_fields":
        payload = fault_bodies.with_extra_fields(payload)
    return web.json_response(payload, status=status, headers=headers)


def request_elapsed_s(request: web.Request) -> float:
    state = request.app[STATE]
    return state.elapsed_s(request[RECEIVED_AT])


def allowance_of(
    state: SimulatorState,
    chain_id: int,
    wallet: str,
    token: TokenSpec,
    spender: str,
    poll: int,
    elapsed_s: float,
) -> int:
    if token.native:
        return UINT256_MAX
    return state.ledger.allowance(chain_id, wallet, token, spender, poll, elapsed_s)


def custom_token_entries(
    state: SimulatorState, chain_id: int, asked: Iterable[str]
) -> list[tuple[str, TokenSpec | None]]:
    """The asked tokens (address, spec or None when unknown), plus the native coin when the
    ``native_in_custom`` knob is on and it was not asked."""
    addresses = unique_addresses(asked, "token")
    known = state.tokens.get(chain_id)
    if known is None:
        return []
    chosen = [(address, known.get(address)) for address in addresses]
    native = state.native[chain_id]
    if state.scenario.behaviour.native_in_custom and native.address not in dict(chosen):
        chosen.append((native.address, native))
    return chosen
