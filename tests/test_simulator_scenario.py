"""Scenario files: strict validation, the built-in default, monitor_config and generated mode."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.domain.addresses import NATIVE_TOKEN, to_checksum
from monitor.errors import ConfigError
from monitor.simulator.generator import GeneratedLedger
from monitor.simulator.model import Scenario
from monitor.simulator.scenario import load_scenario, parse_scenario
from tests.simulator_helpers import (
    COLD,
    FURUCOMBO,
    LOCAL,
    OPS,
    PERMIT2,
    ROUTER,
    SMALL,
    SPENDER,
    TOKEN,
    TREASURY,
    UNKNOWN_SPENDER,
    WALLET_A,
    WALLET_B,
    FakeClock,
    aggregated_url,
    fetch,
    poll,
    position,
    serving,
    small,
)


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    """SMALL with the value at ``path`` replaced (``...`` deletes it)."""
    document = copy.deepcopy(SMALL)
    node: Any = document
    for step in path[:-1]:
        node = node[step]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (
            ["chains", 0, "tokens", 1, "decimals"],
            256,
            "chains[0].tokens[1].decimals: must be an integer 0..255",
        ),
        (
            ["chains", 0, "tokens", 1, "decimals"],
            True,
            "chains[0].tokens[1].decimals: must be an integer",
        ),
        (
            ["chains", 0, "tokens", 1, "address"],
            "0x1234",
            "chains[0].tokens[1].address: not a valid address",
        ),
        (["chains", 0, "tokens", 1, "symbol"], ..., "chains[0].tokens[1].symbol: is required"),
        (
            ["chains", 0, "tokens", 1, "usd_price"],
            "cheap",
            "chains[0].tokens[1].usd_price: must be a non-negative decimal",
        ),
        (["chains", 0, "tokens", 1, "colour"], "red", "chains[0].tokens[1].colour: unknown key"),
        (
            ["chains", 0, "tokens", 1, "custom"],
            "yes",
            "chains[0].tokens[1].custom: must be true or false",
        ),
        (["chains", 0, "tokens", 2, "address"], TOKEN, "chains[0].tokens[2].address: token"),
        (
            ["chains", 0, "tokens", 0, "custom"],
            True,
            "chains[0].tokens[0].custom: the native token",
        ),
        (["chains", 0, "id"], 5, "chains[0].id: must be a supported chain id"),
        (["chains"], [], "chains: must list at least one chain"),
        (["wallets", 1, "address"], WALLET_A, "wallets[1].address: wallet"),
        (
            ["wallets", 0, "address"],
            "0xA1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
            "wallets[0].address: bad EIP-55 checksum",
        ),
        (["spenders", 0, "chain"], 10, "spenders[0].chain: chain 10 is not in chains"),
        (["spenders", 0, "trusted"], "no", "spenders[0].trusted: must be true or false"),
        (["balances", 0, "amount"], "12.5", "balances[0].amount: must be a whole number"),
        (["balances", 0, "amount"], -1, "balances[0].amount: must be a whole number"),
        (["balances", 0, "amount"], str(2**256), "balances[0].amount: must be a whole number"),
        (["balances", 0, "wallet"], "0x" + "00" * 20, "balances[0].wallet: wallet 0x0000"),
        (["balances", 0, "token"], "0x" + "00" * 20, "balances[0].token: token 0x0000"),
        (["balances", 0, "chain"], 8453, "balances[0].chain: chain 8453 is not in chains"),
        (
            ["allowances", 0, "token"],
            NATIVE_TOKEN,
            "allowances[0].token: the native coin needs no approval",
        ),
        (["allowances", 0, "spender"], ..., "allowances[0].spender: is required"),
        (
            ["behaviour"],
            {"filter_empty": "all"},
            "behaviour.filter_empty: must be one of token, wallet",
        ),
        (["behaviour"], {"wallet_key_case": "upper"}, "behaviour.wallet_key_case: must be one of"),
        (
            ["behaviour"],
            {"max_wallets_per_request": 0},
            "behaviour.max_wallets_per_request: must be an integer >= 1",
        ),
        (
            ["behaviour"],
            {"native_in_custom": 1},
            "behaviour.native_in_custom: must be true or false",
        ),
        (["behaviour"], {"error_body": "html"}, "behaviour.error_body: must be one of"),
        (["behaviour"], {"speed": 1}, "behaviour.speed: unknown key"),
        (["requests_per_second"], 0, "requests_per_second: must be an integer >= 1"),
        (["rate_limit_tolerance_s"], 0.9, "rate_limit_tolerance_s: must be a number"),
        (["retry_after_s"], -1, "retry_after_s: must be an integer >= 0"),
        (["api_key"], "", "api_key: must be a non-empty string"),
        (["faults"], [{"body": "nope"}], "faults[0].body: must be one of"),
        (["timeline"], [{"at_poll": 2}], "timeline[0]: needs set_balance or set_allowance"),
        (
            ["timeline"],
            [{"at_poll": 2, "at_s": 3, "set_balance": {}}],
            "timeline[0]: needs exactly one of at_poll, at_s",
        ),
        (
            ["timeline"],
            [
                {
                    "at_poll": 0,
                    "set_balance": {"chain": 1, "wallet": WALLET_A, "token": TOKEN, "amount": 1},
                }
            ],
            "timeline[0].at_poll: must be an integer >= 1",
        ),
        (
            ["timeline"],
            [{"at_s": 1, "set_balance": {"chain": 1, "wallet": WALLET_A, "token": TOKEN}}],
            "timeline[0].set_balance.amount: is required",
        ),
        (["surprise"], 1, "surprise: unknown key"),
        (["wallets"], ..., "wallets: is required"),
        (["generate"], {"seed": 1}, "chains: cannot be combined with generate"),
    ],
)
def test_scenario_errors_name_their_path(path: list[Any], value: Any, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(_broken(path, value))
    assert str(caught.value).startswith(error), str(caught.value)


def test_a_secret_is_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(_broken(["api_key"], "has space"))
    assert "has space" not in str(caught.value)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (None, "<scenario>: the scenario is empty"),
        ([], "<scenario>: the scenario must be a mapping"),
        (
            {"generate": {"seed": 1, "chains": [1], "wallets": 1, "tokens": 1}},
            "generate.spenders: is required",
        ),
        (
            {"generate": {"seed": 1, "chains": [1, 1], "wallets": 1, "tokens": 1, "spenders": 1}},
            "generate.chains: lists a chain twice",
        ),
        (
            {
                "generate": {
                    "seed": 1,
                    "chains": [1],
                    "wallets": 1,
                    "tokens": 1,
                    "spenders": 1,
                    "churn_fraction": 2,
                }
            },
            "generate.churn_fraction: must be a number >= 0 and <= 1",
        ),
    ],
)
def test_document_level_errors(data: object, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("[", r"\[").replace("<", "<")):
        parse_scenario(data)


def test_amount_words_and_separators() -> None:
    scenario = small(
        balances=[{"chain": 1, "wallet": WALLET_A, "token": TOKEN, "amount": "1_000000"}],
        allowances=[
            {"chain": 1, "wallet": WALLET_A, "token": TOKEN, "spender": s, "amount": word}
            for s, word in (
                (SPENDER, "max"),
                (ROUTER, "uint160max"),
                (PERMIT2, "uint96max"),
                (FURUCOMBO, 42),
            )
        ],
    )
    assert scenario.balances[0].amount == 1_000_000
    assert [a.amount for a in scenario.allowances] == [2**256 - 1, 2**160 - 1, 2**96 - 1, 42]


def test_native_token_is_added_per_chain_with_its_symbol() -> None:
    scenario = parse_scenario(
        {
            "chains": [{"id": 56}, {"id": 137, "tokens": []}, {"id": 146}],
            "wallets": [{"address": WALLET_A}],
        }
    )
    natives = [(c.id, c.tokens[0].symbol, c.tokens[0].address) for c in scenario.chains]
    assert natives == [
        (56, "BNB", NATIVE_TOKEN),
        (137, "POL", NATIVE_TOKEN),
        (146, "S", NATIVE_TOKEN),
    ]
    assert all(c.native.native and "native" in c.native.tags for c in scenario.chains)


def test_load_scenario_from_a_file_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    scenario = load_scenario(path)
    assert scenario.source == str(path) and scenario.wallets[0].address == WALLET_A
    path.write_text("chains: []\nchains: []\n")
    with pytest.raises(ConfigError, match="duplicate key"):
        load_scenario(path)
    path.write_text("chains: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_scenario(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")


# --- the default scenario --------------------------------------------------------------------


def test_default_scenario_contents() -> None:
    scenario = load_scenario(None)
    assert [c.id for c in scenario.chains] == [1, 8453]
    ethereum = scenario.chain(1)
    assert ethereum is not None
    symbols = {t.symbol: t for t in ethereum.tokens}
    assert set(symbols) == {"ETH", "USDC", "USDT", "WETH", "UNI", "DAI", "LOCAL"}
    assert symbols["ETH"].native and symbols["ETH"].usd_price == Decimal(3500)
    assert symbols["UNI"].usd_price == Decimal("9.50")
    assert symbols["LOCAL"].custom and symbols["LOCAL"].usd_price is None
    assert symbols["LOCAL"].address == LOCAL
    assert symbols["USDC"].decimals == 6
    labels = {w.label: w.address for w in scenario.wallets}
    assert labels == {"treasury": TREASURY.lower(), "ops": OPS.lower(), "cold": COLD.lower()}
    spenders = {(s.chain_id, s.address): s.trusted for s in scenario.spenders}
    assert spenders == {
        (1, ROUTER.lower()): True,
        (1, PERMIT2.lower()): True,
        (1, UNKNOWN_SPENDER.lower()): False,
        (1, FURUCOMBO.lower()): False,
        (8453, ROUTER.lower()): True,
    }
    cold = COLD.lower()
    assert [a for a in scenario.allowances if a.wallet == cold] == []
    assert {b.token for b in scenario.balances if b.wallet == cold} == {NATIVE_TOKEN}
    assert scenario.api_key is None and scenario.requests_per_second is None


def test_default_scenario_shows_every_approval_kind() -> None:
    scenario = load_scenario(None)
    amounts = {a.amount for a in scenario.allowances}
    assert {2**256 - 1, 2**160 - 1, 2**96 - 1} <= amounts
    assert any(0 < amount < 2**96 - 1 for amount in amounts), "a finite approval"
    assert any(a.spender == FURUCOMBO.lower() for a in scenario.allowances)
    assert any(a.spender == UNKNOWN_SPENDER.lower() for a in scenario.allowances)
    events = {(e.at_poll, e.set_allowance is not None) for e in scenario.timeline}
    assert events == {(3, True), (4, True), (4, False), (6, True), (7, True)}


def test_monitor_config_watches_the_scenario() -> None:
    config = load_scenario(None).monitor_config("http://127.0.0.1:8900")
    assert config["api"] == {"base_url": "http://127.0.0.1:8900"}
    assert config["wallets"] == [
        {"address": TREASURY, "label": "treasury"},
        {"address": OPS, "label": "ops"},
        {"address": COLD, "label": "cold"},
    ]
    chains = config["chains"]
    assert isinstance(chains, list)
    assert chains[0]["id"] == 1
    assert chains[0]["spenders"][0] == {
        "address": ROUTER,
        "label": "1inch Router v6",
        "trusted": True,
    }
    assert len(chains[0]["spenders"]) == 4
    assert chains[0]["custom_tokens"] == [
        {"address": "0x4A6f0e7D3C5B2A1908f7E6d5c4B3a29180706050", "symbol": "LOCAL", "decimals": 18}
    ]
    assert chains[1] == {
        "id": 8453,
        "spenders": [{"address": ROUTER, "label": "1inch Router v6", "trusted": True}],
    }
    assert yaml.safe_load(yaml.safe_dump(config)) == config


def test_monitor_config_carries_rate_and_batch_limits_and_skips_chains_without_spenders() -> None:
    scenario = small(requests_per_second=3, behaviour={"max_wallets_per_request": 20}, spenders=[])
    config = scenario.monitor_config("http://h:1")
    assert config["api"] == {
        "base_url": "http://h:1",
        "requests_per_second": 3,
        "max_wallets_per_request": 20,
    }
    assert config["chains"] == []
    assert config["wallets"] == [
        {"address": to_checksum(WALLET_A), "label": "a"},
        {"address": to_checksum(WALLET_B)},
    ]


def test_monitor_config_is_accepted_by_the_monitors_config_parser() -> None:
    from monitor.config import parse_config

    config = parse_config(load_scenario(None).monitor_config("http://127.0.0.1:8900"))
    assert [c.id for c in config.chains] == [1, 8453]
    assert len(config.wallets) == 3


# --- generated mode --------------------------------------------------------------------------

GENERATE = {"seed": 42, "chains": [1, 8453], "wallets": 30, "tokens": 8, "spenders": 2}


def _generated(**overrides: Any) -> Scenario:
    return parse_scenario({"generate": GENERATE | overrides})


def _amounts(scenario: Scenario, poll: int) -> list[tuple[int, int]]:
    ledger = GeneratedLedger(scenario)
    chain = scenario.chains[0]
    spender = scenario.spenders[0].address
    return [
        (
            ledger.balance(chain.id, w.address, t, poll, 0.0),
            0 if t.native else ledger.allowance(chain.id, w.address, t, spender, poll, 0.0),
        )
        for w in scenario.wallets
        for t in chain.tokens
    ]


def test_generated_world_is_deterministic_per_seed() -> None:
    first, second, other = _generated(), _generated(), _generated(seed=43)
    assert first == second
    assert _amounts(first, 1) == _amounts(second, 1)
    assert first.wallets != other.wallets
    assert _amounts(first, 1) != _amounts(other, 1)
    assert len(first.wallets) == 30
    assert [len(c.tokens) for c in first.chains] == [9, 9]
    assert len(first.spenders) == 4
    assert first.spenders[0].trusted and not first.spenders[1].trusted
    assert len({w.address for w in first.wallets}) == 30


def test_generated_fractions() -> None:
    full = _amounts(_generated(unlimited_fraction=0.0), 1)
    assert all(balance > 0 for balance, _ in full)
    sparse = _amounts(_generated(nonzero_fraction=0.3), 1)
    share = sum(1 for balance, _ in sparse if balance) / len(sparse)
    assert 0.15 < share < 0.45
    unlimited = _amounts(_generated(unlimited_fraction=1.0), 1)
    assert all(allowance == 2**256 - 1 for _, allowance in unlimited if allowance)


def test_generated_churn_changes_about_that_fraction_each_poll() -> None:
    still = _generated()
    assert _amounts(still, 1) == _amounts(still, 9)
    churning = _generated(churn_fraction=0.25, wallets=200)
    before, after = _amounts(churning, 4), _amounts(churning, 5)
    for kind in (0, 1):  # balances, then allowances: each position churns on its own
        pairs = [(b[kind], a[kind]) for b, a in zip(before, after, strict=True) if b[kind]]
        changed = sum(1 for b, a in pairs if b != a) / len(pairs)
        assert 0.18 < changed < 0.32, (kind, changed)
    assert _amounts(churning, 5) == after, "deterministic per poll"


async def test_generated_mode_combines_with_faults_and_rate_limit() -> None:
    scenario = parse_scenario(
        {
            "generate": {"seed": 7, "chains": [1], "wallets": 2000, "tokens": 50, "spenders": 3},
            "faults": [{"endpoint": "aggregated", "status": 503, "count": 1}],
            "requests_per_second": 100,
        }
    )
    assert len(scenario.wallets) * (len(scenario.tokens) - 1) * len(scenario.spenders) == 300_000
    spender = scenario.spenders[2].address
    clock = FakeClock()
    async with serving(scenario, clock) as (simulator, session):
        batch = [w.address for w in scenario.wallets[:50]]
        status, _, _ = await fetch(session, "GET", aggregated_url(1, spender, batch, "true"))
        assert status == 503
        for start in range(0, 250, 50):
            batch = [w.address for w in scenario.wallets[start : start + 50]]
            tokens = await poll(session, spender, batch)
            assert len(tokens) == 51
            assert all(len(t["wallets"]) == 50 for t in tokens)
        assert simulator.poll_count(1, spender, scenario.wallets[0].address) == 1
        for _ in range(100):
            await fetch(session, "GET", "price/v1.1/1")
        assert (await fetch(session, "GET", "price/v1.1/1"))[0] == 429


async def test_generated_positions_over_http_match_the_ledger() -> None:
    scenario = _generated(churn_fraction=1.0)
    wallet, spender = scenario.wallets[3].address, scenario.spenders[1].address
    token = scenario.chains[0].tokens[2]
    ledger = GeneratedLedger(scenario)
    async with serving(scenario) as (_, session):
        for poll_number in (1, 2):
            tokens = await poll(session, spender, [wallet], filter_empty="false")
            assert position(tokens, token.address, wallet) == {
                "balance": str(ledger.balance(1, wallet, token, poll_number, 0.0)),
                "allowance": str(ledger.allowance(1, wallet, token, spender, poll_number, 0.0)),
            }
        _, prices, _ = await fetch(session, "GET", "price/v1.1/1?currency=USD")
        assert len(prices) == 9
