"""The Spot Price API v1.1 routes under ``/price/v1.1/{chain}``.

Without ``currency`` a price is the value of one whole token in native wei (exact, truncated);
with ``currency=USD`` the configured decimal. Other currencies of the enum are refused: the
simulator prices only in USD. Tokens without a price are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Final

from aiohttp import web

from monitor.simulator.answers import (
    ApiError,
    parse_chain,
    read_json_body,
    respond,
    string_list,
    unique_addresses,
)
from monitor.simulator.faults import FaultTarget
from monitor.simulator.model import TokenSpec
from monitor.simulator.state import STATE, SimulatorState

CURRENCIES: Final = (
    "USD", "AED", "ARS", "AUD", "BDT", "BHD", "BMD", "BRL", "CAD", "CHF", "CLP", "CNY", "CZK",
    "DKK", "EUR", "GBP", "HKD", "HUF", "IDR", "ILS", "INR", "JPY", "KRW", "KWD", "LKR", "MMK",
    "MXN", "MYR", "NGN", "NOK", "NZD", "PHP", "PKR", "PLN", "RUB", "SAR", "SEK", "SGD", "THB",
    "TRY", "TWD", "UAH", "VEF", "VND", "ZAR",
)  # fmt: skip
"""The Spot Price API's currency enum (spot-price-v1.1 OpenAPI document)."""

PREFIX: Final = "/price/v1.1/{chain}"
_WEI_PER_NATIVE: Final = 10**18


def add_price_routes(app: web.Application) -> None:
    """Register the Spot Price API routes on ``app``."""
    app.router.add_get(PREFIX, price_whitelist)
    app.router.add_post(PREFIX, price_post)
    app.router.add_get(f"{PREFIX}/{{addresses}}", price_by_addresses)


def _currency(value: str | None) -> str | None:
    if value is None:
        return None
    if value == "USD":
        return value
    if value in CURRENCIES:
        raise ApiError(
            f"currency {value} is not available: the simulator prices only in USD",
            meta=[("currency", value)],
        )
    raise ApiError(f"unknown currency {value!r:.20}", meta=[("currency", value)])


def _prices(
    state: SimulatorState, chain_id: int, tokens: Iterable[TokenSpec], currency: str | None
) -> dict[str, str]:
    native = state.native.get(chain_id)
    native_usd = native.usd_price if native else None
    prices: dict[str, str] = {}
    for token in tokens:
        usd = token.usd_price
        if usd is None:
            continue
        if currency == "USD":
            prices[token.address] = format(usd, "f")
        elif native_usd:
            wei = Fraction(usd) * _WEI_PER_NATIVE / Fraction(native_usd)
            prices[token.address] = str(int(wei))
    return prices


def _price_target(state: SimulatorState, chain_id: int) -> FaultTarget:
    return FaultTarget(
        endpoint="price",
        chain_id=chain_id,
        polls={},
        default_poll=state.polls.chain_current(chain_id),
    )


async def price_whitelist(request: web.Request) -> web.StreamResponse:
    """GET /price/v1.1/{chain}[?currency=USD]: every listed token with a price."""
    state = request.app[STATE]
    chain_id = parse_chain(request)
    currency = _currency(request.query.get("currency"))
    answer = _prices(state, chain_id, state.listed.get(chain_id, ()), currency)
    return await respond(request, _price_target(state, chain_id), answer)


async def price_post(request: web.Request) -> web.StreamResponse:
    """POST /price/v1.1/{chain} {"tokens": [...], "currency": "USD"}"""
    state = request.app[STATE]
    chain_id = parse_chain(request)
    body = await read_json_body(request)
    asked = string_list(body, "tokens")
    currency_field = body.get("currency")
    if currency_field is not None and not isinstance(currency_field, str):
        raise ApiError("currency must be a string")
    currency = _currency(currency_field)
    answer = _prices(state, chain_id, _known(state, chain_id, asked), currency)
    return await respond(request, _price_target(state, chain_id), answer)


async def price_by_addresses(request: web.Request) -> web.StreamResponse:
    """GET /price/v1.1/{chain}/{a,b,c}[?currency=USD] and GET /price/v1.1/{chain}/currencies"""
    state = request.app[STATE]
    chain_id = parse_chain(request)
    addresses = request.match_info["addresses"]
    if addresses == "currencies":
        return await respond(request, _price_target(state, chain_id), {"codes": list(CURRENCIES)})
    currency = _currency(request.query.get("currency"))
    tokens = _known(state, chain_id, addresses.split(","))
    answer = _prices(state, chain_id, tokens, currency)
    return await respond(request, _price_target(state, chain_id), answer)


def _known(state: SimulatorState, chain_id: int, asked: Iterable[str]) -> list[TokenSpec]:
    known = state.tokens.get(chain_id, {})
    return [t for a in unique_addresses(asked, "token") if (t := known.get(a)) is not None]
