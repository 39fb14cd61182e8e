"""Shared pieces of the simulator tests: the default scenario's addresses, a fake clock, a
small scenario builder and HTTP shortcuts."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from monitor.simulator.model import Scenario
from monitor.simulator.scenario import parse_scenario
from monitor.simulator.server import RunningSimulator, run_simulator

TREASURY = "0x5014ef5ED72014E90B82285EA7888B4A091409Ec"
OPS = "0xfcd6A6536Fc62D5Dcf3E1Fd31F6BF54eA18ccBa2"
COLD = "0x02487D261e10ae9FC6C76e86BB80B0fAC04676C4"
ROUTER = "0x111111125421cA6dc452d289314280a0f8842A65"
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
UNKNOWN_SPENDER = "0x161b1dFB96298624a40C7D1E1948cd75045E5AbA"
FURUCOMBO = "0x17e8Ca1b4798B97602895f63206afCd1Fc90Ca5f"
NATIVE = "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
UNI = "0x1f9840a85d5af5bf1d1762f925bdaddc4201f984"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"
LOCAL = "0x4a6f0e7d3c5b2a1908f7e6d5c4b3a29180706050"
BASE_USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
MAX = str(2**256 - 1)
UINT96_MAX = str(2**96 - 1)
UINT160_MAX = str(2**160 - 1)

# A small explicit scenario: wallets A and B on chain 1, one ERC-20 (TKN), spender S.
WALLET_A = "0x" + "a1" * 20
WALLET_B = "0x" + "b2" * 20
SPENDER = "0x" + "5e" * 20
TOKEN = "0x" + "70" * 20
CUSTOM = "0x" + "c0" * 20

SMALL: dict[str, Any] = {
    "chains": [
        {
            "id": 1,
            "tokens": [
                {"native": True, "usd_price": "2000"},
                {
                    "address": TOKEN,
                    "symbol": "TKN",
                    "name": "Token",
                    "decimals": 6,
                    "usd_price": "2",
                },
                {
                    "address": CUSTOM,
                    "symbol": "CST",
                    "name": "Custom",
                    "decimals": 18,
                    "custom": True,
                },
            ],
        }
    ],
    "wallets": [{"address": WALLET_A, "label": "a"}, {"address": WALLET_B}],
    "spenders": [{"chain": 1, "address": SPENDER, "label": "s", "trusted": False}],
    "balances": [{"chain": 1, "wallet": WALLET_A, "token": TOKEN, "amount": "100"}],
    "allowances": [
        {"chain": 1, "wallet": WALLET_A, "token": TOKEN, "spender": SPENDER, "amount": "50"}
    ],
}


def small(**overrides: Any) -> Scenario:
    """The small scenario with top-level keys replaced (``None`` removes a key)."""
    document = copy.deepcopy(SMALL)
    for key, value in overrides.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return parse_scenario(document)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def serving(
    scenario: Scenario, clock: FakeClock | None = None
) -> AsyncIterator[tuple[RunningSimulator, aiohttp.ClientSession]]:
    """A running simulator and a client session pointed at it."""
    async with (
        run_simulator(scenario, clock=clock or time.monotonic) as simulator,
        aiohttp.ClientSession(base_url=simulator.base_url + "/") as session,
    ):
        yield simulator, session


def aggregated_url(chain: int, spender: str, wallets: list[str], filter_empty: str | None) -> str:
    """Endpoint 1's path and query (relative to the session's base URL)."""
    query = f"wallets={','.join(wallets)}"
    if filter_empty is not None:
        query += f"&filterEmpty={filter_empty}"
    return f"balance/v1.2/{chain}/aggregatedBalancesAndAllowances/{spender}?{query}"


async def fetch(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    json_body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """Status, parsed JSON body (or the text when it is not JSON) and the response."""
    async with session.request(method, url, json=json_body, headers=headers) as response:
        text = await response.text()
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    return response.status, body, response


async def poll(
    session: aiohttp.ClientSession,
    spender: str,
    wallets: list[str],
    *,
    chain: int = 1,
    filter_empty: str | None = "true",
) -> list[dict[str, Any]]:
    """One successful endpoint-1 request; its token list."""
    status, body, _ = await fetch(
        session, "GET", aggregated_url(chain, spender, wallets, filter_empty)
    )
    assert status == 200, body
    assert isinstance(body, list)
    return body


def position(tokens: list[dict[str, Any]], token: str, wallet: str) -> dict[str, str] | None:
    """The ``{balance, allowance}`` of ``wallet`` for ``token`` in an endpoint-1 answer."""
    for entry in tokens:
        if entry["address"] == token.lower():
            wallets = entry["wallets"] or {}
            for key, value in wallets.items():
                if key.lower() == wallet.lower():
                    return dict(value)
    return None
