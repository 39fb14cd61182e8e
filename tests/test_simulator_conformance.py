"""Every simulated endpoint's answers validate against 1inch's published OpenAPI documents.

The specs are per-chain dumps for Ethereum: their paths are ``/v1.2/1/...`` (Balance) and
``/v1.1/1...`` (Spot Price), served by the simulator under ``/balance`` and ``/price``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_schema_validator import OAS30Validator

from monitor.simulator.scenario import load_scenario
from tests.simulator_helpers import DAI, LOCAL, OPS, ROUTER, TREASURY, USDC, serving

SPEC_DIR = Path(__file__).parent / "data" / "openapi"
BALANCE_SPEC = json.loads((SPEC_DIR / "balance-v1.2-ethereum.openapi.json").read_text())
PRICE_SPEC = json.loads((SPEC_DIR / "spot-price-v1.1-ethereum.openapi.json").read_text())


def _inline(node: Any, spec: dict[str, Any]) -> Any:
    """``node`` with every ``#/components/...`` reference replaced by its target."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _inline(target, spec)
        return {key: _inline(value, spec) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, spec) for item in node]
    return node


@dataclass(frozen=True)
class Case:
    spec: str  # "balance" or "price"
    spec_path: str
    method: str
    url: str
    body: object = None
    status: int = 200


CASES = [
    Case(
        "balance",
        "/v1.2/1/aggregatedBalancesAndAllowances/{spender}",
        "get",
        f"balance/v1.2/1/aggregatedBalancesAndAllowances/{ROUTER}"
        f"?wallets={TREASURY},{OPS}&filterEmpty=true",
    ),
    Case(
        "balance",
        "/v1.2/1/aggregatedBalancesAndAllowances/{spender}",
        "get",
        f"balance/v1.2/1/aggregatedBalancesAndAllowances/{ROUTER}?wallets={OPS}",
    ),
    Case("balance", "/v1.2/1/balances/{walletAddress}", "get", f"balance/v1.2/1/balances/{OPS}"),
    Case(
        "balance",
        "/v1.2/1/balances/{walletAddress}",
        "get",
        "balance/v1.2/1/balances/0xbad",
        status=400,
    ),
    Case(
        "balance",
        "/v1.2/1/balances/{walletAddress}",
        "post",
        f"balance/v1.2/1/balances/{TREASURY}",
        {"tokens": [LOCAL, DAI]},
    ),
    Case(
        "balance",
        "/v1.2/1/balances/{walletAddress}",
        "post",
        f"balance/v1.2/1/balances/{TREASURY}",
        {"tokens": ["0xbad"]},
        status=400,
    ),
    Case(
        "balance",
        "/v1.2/1/balances/multiple/walletsAndTokens",
        "post",
        "balance/v1.2/1/balances/multiple/walletsAndTokens",
        {"tokens": [USDC, LOCAL], "wallets": [TREASURY, OPS]},
    ),
    Case(
        "balance",
        "/v1.2/1/balances/multiple/walletsAndTokens",
        "post",
        "balance/v1.2/1/balances/multiple/walletsAndTokens",
        {"tokens": [USDC], "wallets": ["0xbad"]},
        status=400,
    ),
    Case(
        "balance",
        "/v1.2/1/allowancesAndBalances/{spender}/{walletAddress}",
        "get",
        f"balance/v1.2/1/allowancesAndBalances/{ROUTER}/{TREASURY}",
    ),
    Case(
        "balance",
        "/v1.2/1/allowancesAndBalances/{spender}/{walletAddress}",
        "get",
        f"balance/v1.2/1/allowancesAndBalances/0xbad/{TREASURY}",
        status=400,
    ),
    Case(
        "balance",
        "/v1.2/1/allowancesAndBalances/{spender}/{walletAddress}",
        "post",
        f"balance/v1.2/1/allowancesAndBalances/{ROUTER}/{TREASURY}",
        {"tokens": [LOCAL]},
    ),
    Case(
        "balance",
        "/v1.2/1/allowancesAndBalances/{spender}/{walletAddress}",
        "post",
        f"balance/v1.2/1/allowancesAndBalances/{ROUTER}/{TREASURY}",
        {"tokens": "not a list"},
        status=400,
    ),
    Case(
        "balance",
        "/v1.2/1/allowances/{spender}/{walletAddress}",
        "get",
        f"balance/v1.2/1/allowances/{ROUTER}/{TREASURY}",
    ),
    Case(
        "balance",
        "/v1.2/1/allowances/{spender}/{walletAddress}",
        "post",
        f"balance/v1.2/1/allowances/{ROUTER}/{TREASURY}",
        {"tokens": [LOCAL, USDC]},
    ),
    Case("price", "/v1.1/1", "get", "price/v1.1/1"),
    Case("price", "/v1.1/1", "get", "price/v1.1/1?currency=USD"),
    Case("price", "/v1.1/1", "post", "price/v1.1/1", {"tokens": [USDC, DAI], "currency": "USD"}),
    Case("price", "/v1.1/1", "post", "price/v1.1/1", {"tokens": [USDC]}),
    Case("price", "/v1.1/1", "post", "price/v1.1/1", {"tokens": ["0xbad"]}, status=400),
    Case("price", "/v1.1/1/currencies", "get", "price/v1.1/1/currencies"),
    Case("price", "/v1.1/1/{addresses}", "get", f"price/v1.1/1/{USDC},{DAI}"),
    Case("price", "/v1.1/1/{addresses}", "get", f"price/v1.1/1/{USDC}?currency=USD"),
    Case("price", "/v1.1/1/{addresses}", "get", "price/v1.1/1/0xbad", status=400),
    Case("price", "/v1.1/1/{addresses}", "get", f"price/v1.1/1/{USDC}?currency=EUR", status=400),
]


def _operation(case: Case) -> dict[str, Any]:
    spec = BALANCE_SPEC if case.spec == "balance" else PRICE_SPEC
    return _inline(spec["paths"][case.spec_path][case.method], spec)  # type: ignore[no-any-return]


@pytest.fixture(params=["described", "message"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[aiohttp.ClientSession]:
    scenario = load_scenario(None)
    scenario = replace(scenario, behaviour=replace(scenario.behaviour, error_body=request.param))
    async with serving(scenario) as (_, session):
        yield session


def test_every_documented_operation_has_a_case() -> None:
    documented = {
        (name, path, method)
        for name, spec in (("balance", BALANCE_SPEC), ("price", PRICE_SPEC))
        for path, operations in spec["paths"].items()
        for method in operations
    }
    covered = {(c.spec, c.spec_path, c.method) for c in CASES if c.status == 200}
    assert documented == covered


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.url[:60]} {c.status}")
async def test_response_conforms_to_the_openapi_document(
    sim: aiohttp.ClientSession, case: Case
) -> None:
    operation = _operation(case)
    if case.body is not None and case.status == 200:
        request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
        OAS30Validator(request_schema).validate(case.body)
    async with sim.request(case.method.upper(), case.url, json=case.body) as response:
        status = response.status
        body = await response.json()
    assert status == case.status, body
    documented = operation["responses"]
    assert str(status) in documented, f"{status} is not documented for this operation"
    content = documented[str(status)].get("content")
    if content is not None:
        OAS30Validator(content["application/json"]["schema"]).validate(body)
    if status == 200:
        _amounts_are_decimal_strings(body)
    else:
        assert body["statusCode"] == 400 and body["error"] == "Bad Request"


def _amounts_are_decimal_strings(body: Any) -> None:
    """Beyond the schema: every balance, allowance and wei price is a string of digits."""
    if isinstance(body, list):
        for token in body:
            for entry in token["wallets"].values():
                assert entry["balance"].isdigit() and entry["allowance"].isdigit()
    elif "codes" not in body:
        for value in body.values():
            values = value.values() if isinstance(value, dict) else [value]
            for text in values:
                assert isinstance(text, str)
                assert text.replace(".", "", 1).isdigit()


def test_schema_validation_can_fail() -> None:
    """The validator really checks: a token object without its required fields is refused."""
    schema = _operation(CASES[0])["responses"]["200"]["content"]["application/json"]["schema"]
    validator = OAS30Validator(schema)
    assert not validator.is_valid([{"address": USDC}])
    assert not validator.is_valid({"not": "a list"})
