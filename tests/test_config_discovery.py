"""The discovery and RPC settings of the config file: ``chains[].discovery``,
``chains[].rpc.url`` and the ``rpc:`` section."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from monitor.config import DiscoverySettings, RpcSettings, parse_config
from monitor.errors import ConfigError

WALLET = "0x1111111111111111111111111111111111111111"
SPENDER = "0x2222222222222222222222222222222222222222"
SECRET_URL = "https://eth-mainnet.example.com/v2/s3cr3t-provider-key?apikey=hunter2"


def config(**chain: Any) -> dict[str, Any]:
    return {"chains": [{"id": 1, **chain}], "wallets": [{"address": WALLET}]}


def test_discovery_is_off_unless_present() -> None:
    loaded = parse_config(config(spenders=[{"address": SPENDER}]))
    assert loaded.chains[0].discovery is None
    assert loaded.discovery_chains == ()


@pytest.mark.parametrize("value", [None, True, {}])
def test_discovery_present_is_on_with_defaults(value: object) -> None:
    loaded = parse_config(config(discovery=value))
    assert loaded.chains[0].discovery == DiscoverySettings(start_block=0, confirmations=12)
    assert loaded.discovery_chains == loaded.chains


def test_discovery_false_is_off_and_then_spenders_are_required() -> None:
    with pytest.raises(ConfigError, match=r"chains\[0\]\.spenders: is required"):
        parse_config(config(discovery=False))


def test_with_discovery_no_spender_needs_naming() -> None:
    loaded = parse_config(config(discovery={"start_block": 18_000_000, "confirmations": 3}))
    chain = loaded.chains[0]
    assert chain.spenders == ()
    assert chain.discovery == DiscoverySettings(start_block=18_000_000, confirmations=3)


@pytest.mark.parametrize(
    ("discovery", "path"),
    [
        ({"start_block": -1}, "chains[0].discovery.start_block"),
        ({"confirmations": "many"}, "chains[0].discovery.confirmations"),
        ({"from": 3}, "chains[0].discovery.from"),
        ("yes", "chains[0].discovery"),
    ],
)
def test_bad_discovery_settings_name_their_path(discovery: object, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(discovery=discovery))
    assert caught.value.path == path


def test_rpc_settings_default_and_override() -> None:
    assert parse_config(config(discovery={})).rpc == RpcSettings()
    data = config(discovery={})
    data["rpc"] = {"requests_per_second": 25, "max_block_range": 2000, "wallets_per_query": 10}
    rpc = parse_config(data).rpc
    assert (rpc.requests_per_second, rpc.max_block_range, rpc.wallets_per_query) == (25, 2000, 10)
    data["rpc"] = {"max_block_range": 0}
    with pytest.raises(ConfigError, match=r"^rpc\.max_block_range: "):
        parse_config(data)


def test_a_multicall_holds_1000_calls_by_default() -> None:
    """31,000 reads (20,000 approvals) make 31 aggregates, under issue 13's 50 eth_call a
    poll; ~7M gas each, under nodes' eth_call gas caps."""
    assert parse_config(config(discovery={})).rpc.calls_per_multicall == 1000
    data = config(discovery={})
    data["rpc"] = {"calls_per_multicall": 300}
    assert parse_config(data).rpc.calls_per_multicall == 300


def test_an_rpc_url_is_kept_but_never_shown() -> None:
    loaded = parse_config(config(discovery={}, rpc={"url": SECRET_URL}))
    chain = loaded.chains[0]
    assert chain.rpc_url == SECRET_URL
    for text in (repr(chain), repr(loaded), str(loaded)):
        assert "s3cr3t" not in text
        assert "hunter2" not in text


@pytest.mark.parametrize(
    "url",
    [
        "ftp://node.example.com/s3cr3t-provider-key",
        "https:///s3cr3t-provider-key",
        "wss://node.example.com/s3cr3t-provider-key",
        "https://node.example.com:99999/s3cr3t-provider-key",
    ],
)
def test_a_bad_rpc_url_is_refused_without_repeating_it(url: str) -> None:
    data = copy.deepcopy(config(discovery={}, rpc={"url": url}))
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.path == "chains[0].rpc.url"
    assert "s3cr3t" not in str(caught.value)


def test_unknown_keys_under_a_chain_rpc_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"chains\[0\]\.rpc\.requests_per_second: unknown key"):
        parse_config(config(discovery={}, rpc={"requests_per_second": 3}))
