"""``check`` with discovery: key-free mode, the RPC endpoint of each chain (shown as
scheme://host only) and ``--online``'s ``eth_chainId`` against a real anvil."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.cli import EXIT_CONFIG, main
from tests.chain_helpers import Anvil
from tests.test_check import check, config_doc, write_config

SECRET = "s3cr3t-provider-key"


def discovery_doc(**chain: Any) -> dict[str, Any]:
    doc = config_doc(chains=[{"id": 1, "discovery": {"confirmations": 3}, **chain}])
    return doc


def test_key_free_mode_needs_no_key_and_no_spender(tmp_path: Path) -> None:
    env = {"EXPOSURE_MONITOR_RPC_URL_1": f"https://eth.example.com/v2/{SECRET}?k={SECRET}"}
    code, out, err = check(write_config(tmp_path, discovery_doc()), environ=env)
    assert (code, err) == (0, "")
    assert "key-free mode" in out
    assert "1 chain, 0 spenders" in out
    assert (
        "  discovery from block 0, 3 confirmations, through https://eth.example.com "
        "(environment variable EXPOSURE_MONITOR_RPC_URL_1)\n" in out
    )
    assert "a poll makes 0 requests" in out
    assert SECRET not in out + err


def test_discovery_without_an_endpoint_is_refused_naming_the_ways_to_give_one(
    tmp_path: Path,
) -> None:
    code, _, err = check(write_config(tmp_path, discovery_doc()))
    assert code == 2
    assert err == (
        "exposure-monitor: config error: chains[0].discovery: chain 1 has no JSON-RPC "
        "endpoint: set chains[].rpc.url, the environment variable EXPOSURE_MONITOR_RPC_URL_1, "
        "the systemd credential rpc_url_1, or a 1inch API key (its Web3 RPC API)\n"
    )


def test_a_chain_only_1inch_watches_still_needs_the_key(tmp_path: Path) -> None:
    doc = config_doc(
        chains=[
            {"id": 1, "discovery": {}},
            {"id": 8453, "spenders": [{"address": "0x" + "11" * 20}]},
        ]
    )
    env = {"EXPOSURE_MONITOR_RPC_URL_1": "http://127.0.0.1:8545"}
    code, _, err = check(write_config(tmp_path, doc), environ=env)
    assert code == 2
    assert "without a key, and none is set, while chain 8453 has no discovery" in err


def test_a_bad_endpoint_url_names_its_origin_never_the_url(tmp_path: Path) -> None:
    env = {"EXPOSURE_MONITOR_RPC_URL_1": f"ftp://eth.example.com/{SECRET}"}
    code, _, err = check(write_config(tmp_path, discovery_doc()), environ=env)
    assert code == 2
    assert "environment variable EXPOSURE_MONITOR_RPC_URL_1" in err
    assert SECRET not in err


def test_online_asks_each_endpoint_for_its_chain_id(tmp_path: Path) -> None:
    path = write_config(tmp_path, discovery_doc())
    with Anvil() as node:
        env = {"EXPOSURE_MONITOR_RPC_URL_1": f"{node.url}?apikey={SECRET}"}
        code, out, err = check(path, online=True, environ=env)
    assert (code, err) == (0, "")
    assert f"chain 1 RPC     {node.url}: reachable, answered without a key" in out
    # Key-free: 1inch is not asked.
    assert "Balance API" not in out
    assert SECRET not in out


def test_online_refuses_an_endpoint_serving_another_chain(tmp_path: Path) -> None:
    path = write_config(tmp_path, discovery_doc())
    with Anvil(chain_id=10) as node:
        code, _, err = check(path, online=True, environ={"EXPOSURE_MONITOR_RPC_URL_1": node.url})
    assert code == 3
    assert "eth_chainId answered 10, but this endpoint is configured for chain 1" in err


def test_once_and_run_refuse_what_check_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chain only 1inch would watch, with no key for the real API, would be polled by no
    source at all: once and run refuse to start (exit 2) instead of looking quiet."""
    doc = config_doc(
        chains=[
            {"id": 1, "discovery": {}},
            {"id": 8453, "spenders": [{"address": "0x" + "11" * 20}]},
        ]
    )
    doc["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}
    path = write_config(tmp_path, doc)
    monkeypatch.delenv("ONEINCH_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("EXPOSURE_MONITOR_RPC_URL_1", "http://127.0.0.1:9")
    for command in ("once", "run"):
        assert main([command, "--config", str(path)]) == EXIT_CONFIG
        err = capsys.readouterr().err
        assert "while chain 8453 has no discovery" in err
    assert not (tmp_path / "db.sqlite").exists()  # refused before anything was opened
    # And a chain with discovery but no endpoint.
    monkeypatch.delenv("EXPOSURE_MONITOR_RPC_URL_1")
    doc["chains"] = [{"id": 1, "discovery": {}}]
    path = write_config(tmp_path, doc)
    assert main(["once", "--config", str(path)]) == EXIT_CONFIG
    assert "chain 1 has no JSON-RPC endpoint" in capsys.readouterr().err
