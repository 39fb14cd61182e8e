"""The anvil harness and the Solidity test contracts behave as the chain tests assume: the
events, reverts and Multicall3 answers they are built to produce, on a real node."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from eth_abi.abi import decode

from tests import chain_helpers
from tests.chain_helpers import (
    APPROVAL_TOPIC0,
    BUILD_JSON,
    MULTICALL3_ADDRESS,
    ROOT,
    TOOLS_BIN,
    TRANSFER_TOPIC0,
    UINT256_MAX,
    Anvil,
    AnvilRpcError,
    TransactionReverted,
    anvil_fixture,
    calldata,
    topic_address,
)

node = anvil_fixture()
ALLOWANCE = "allowance(address,address)"
AGGREGATE3 = "aggregate3((address,bool,bytes)[])"


def deploy_token(node: Anvil, name: str = "TestToken", *, minted: int = 10**21) -> str:
    owner = node.accounts[0]
    token = node.deploy(name, "Test Token", "TST", 18)
    node.send(owner, token, "mint(address,uint256)", owner, minted)
    return token


def allowance(node: Anvil, token: str, owner: str, spender: str) -> int:
    (value,) = node.call(token, ALLOWANCE, owner, spender, returns=["uint256"])
    assert isinstance(value, int)
    return value


def approval_logs(node: Anvil, owner: str) -> list[dict[str, object]]:
    return node.logs(topics=[APPROVAL_TOPIC0, "0x" + "00" * 12 + owner.removeprefix("0x")])


def topics_of(receipt: dict[str, object]) -> list[str]:
    logs = receipt["logs"]
    assert isinstance(logs, list)
    return [log["topics"][0] for log in logs]


# -- the node ---------------------------------------------------------------------------------


def test_anvil_serves_chain_1_with_unlocked_accounts(node: Anvil) -> None:
    assert node.url.startswith("http://127.0.0.1:")
    assert int(node.rpc("eth_chainId"), 16) == 1
    assert len(node.accounts) == 10
    assert all(account == account.lower() for account in node.accounts)
    assert node.balance(node.accounts[0]) > 0
    before = node.block_number()
    node.mine(3)
    assert node.block_number() == before + 3


def test_stop_ends_the_process_and_frees_the_port() -> None:
    anvil = Anvil().start()
    url = anvil.url
    anvil.stop()
    assert not anvil.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, data=b"{}", timeout=2)
    anvil.stop()  # idempotent


def test_a_missing_anvil_fails_the_test_naming_scripts_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(chain_helpers, "TOOLS_BIN", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="run scripts/tools"):
        Anvil().start()


def test_without_auto_mining_transactions_wait_for_mine() -> None:
    with Anvil(auto_mine=False) as anvil:
        owner, spender = anvil.accounts[:2]
        token = deploy_token(anvil)  # send() mines when nothing else does
        head = anvil.block_number()
        first = anvil.submit(
            {
                "from": owner,
                "to": token,
                "data": "0x" + calldata("approve(address,uint256)", spender, 1).hex(),
            }
        )
        second = anvil.submit(
            {
                "from": owner,
                "to": token,
                "data": "0x" + calldata("approve(address,uint256)", spender, 2).hex(),
            }
        )
        assert anvil.block_number() == head
        anvil.mine()
        assert anvil.receipt(first)["blockNumber"] == anvil.receipt(second)["blockNumber"]
        assert anvil.block_number() == head + 1
        assert allowance(anvil, token, owner, spender) == 2


def test_an_impersonated_address_sends_transactions_at_a_set_time(node: Anvil) -> None:
    wallet = "0x00000000000000000000000000000000000b0b0b"
    spender = node.accounts[1]
    token = deploy_token(node)
    node.impersonate(wallet)
    node.set_next_block_timestamp(2_000_000_000)
    receipt = node.send(wallet, token, "approve(address,uint256)", spender, 9)
    assert node.block_timestamp(int(receipt["blockNumber"], 16)) == 2_000_000_000
    assert allowance(node, token, wallet, spender) == 9


# -- TestToken --------------------------------------------------------------------------------


def test_transfer_from_lowers_the_allowance_without_an_approval_log(node: Anvil) -> None:
    owner, spender, recipient = node.accounts[:3]
    token = deploy_token(node)
    approve = node.send(owner, token, "approve(address,uint256)", spender, 100)
    assert topics_of(approve) == [APPROVAL_TOPIC0]

    spend = node.send(spender, token, "transferFrom(address,address,uint256)", owner, recipient, 30)

    assert topics_of(spend) == [TRANSFER_TOPIC0]
    assert allowance(node, token, owner, spender) == 70
    (log,) = approval_logs(node, owner)
    assert log["address"] == token
    topics = log["topics"]
    assert isinstance(topics, list) and len(topics) == 3
    assert topic_address(topics[1]) == owner
    assert topic_address(topics[2]) == spender
    assert int(str(log["data"]), 16) == 100  # the event's value, no longer the live one


def test_an_unlimited_allowance_is_not_lowered_by_transfer_from(node: Anvil) -> None:
    owner, spender, recipient = node.accounts[:3]
    token = deploy_token(node)
    node.send(owner, token, "approve(address,uint256)", spender, UINT256_MAX)
    node.send(spender, token, "transferFrom(address,address,uint256)", owner, recipient, 30)
    assert allowance(node, token, owner, spender) == UINT256_MAX


def test_transfer_from_beyond_the_allowance_reverts(node: Anvil) -> None:
    owner, spender, recipient = node.accounts[:3]
    token = deploy_token(node)
    node.send(owner, token, "approve(address,uint256)", spender, 5)
    with pytest.raises(TransactionReverted, match="insufficient allowance"):
        node.send(spender, token, "transferFrom(address,address,uint256)", owner, recipient, 6)


def test_token_metadata_and_balances(node: Anvil) -> None:
    owner, other = node.accounts[:2]
    token = deploy_token(node, minted=1000)
    node.send(owner, token, "transfer(address,uint256)", other, 250)
    assert node.call(token, "symbol()", returns=["string"]) == ("TST",)
    assert node.call(token, "name()", returns=["string"]) == ("Test Token",)
    assert node.call(token, "decimals()", returns=["uint8"]) == (18,)
    assert node.call(token, "totalSupply()", returns=["uint256"]) == (1000,)
    assert node.call(token, "balanceOf(address)", owner, returns=["uint256"]) == (750,)
    assert node.call(token, "balanceOf(address)", other, returns=["uint256"]) == (250,)


def test_bytes32_symbol_token_answers_bytes32(node: Anvil) -> None:
    token = node.deploy(
        "Bytes32SymbolToken", b"Maker".ljust(32, b"\0"), b"MKR".ljust(32, b"\0"), 18
    )
    (symbol,) = node.call(token, "symbol()", returns=["bytes32"])
    assert symbol == b"MKR".ljust(32, b"\0")
    answer = node.call_raw(token, calldata("name()"))
    assert answer == b"Maker".ljust(32, b"\0")  # one word, not an ABI string
    assert node.call(token, "decimals()", returns=["uint8"]) == (18,)


def test_reverting_allowance_token_emits_approval_but_allowance_reverts(node: Anvil) -> None:
    owner, spender = node.accounts[:2]
    token = deploy_token(node, "RevertingAllowanceToken", minted=40)
    node.send(owner, token, "approve(address,uint256)", spender, 10)
    assert len(approval_logs(node, owner)) == 1
    with pytest.raises(AnvilRpcError, match="allowance is not readable"):
        node.call(token, ALLOWANCE, owner, spender, returns=["uint256"])
    assert node.call(token, "balanceOf(address)", owner, returns=["uint256"]) == (40,)


# -- not ERC-20 -------------------------------------------------------------------------------


def test_fake_approval_emitter_emits_approvals_but_is_no_token(node: Anvil) -> None:
    victim, attacker = node.accounts[1], node.accounts[2]
    emitter = node.deploy("FakeApprovalEmitter")
    node.send(
        attacker, emitter, "emitApproval(address,address,uint256)", victim, attacker, UINT256_MAX
    )
    (log,) = approval_logs(node, victim)
    assert log["address"] == emitter
    assert isinstance(log["topics"], list) and len(log["topics"]) == 3
    for signature, args in [
        (ALLOWANCE, (victim, attacker)),
        ("balanceOf(address)", (victim,)),
        ("totalSupply()", ()),
    ]:
        with pytest.raises(AnvilRpcError):
            node.call(emitter, signature, *args)


def test_nft_approval_has_four_topics(node: Anvil) -> None:
    owner, approved = node.accounts[:2]
    nft = node.deploy("TestNft")
    node.send(owner, nft, "mint(address,uint256)", owner, 42)
    node.send(owner, nft, "approve(address,uint256)", approved, 42)
    (log,) = approval_logs(node, owner)
    topics = log["topics"]
    assert isinstance(topics, list) and len(topics) == 4
    assert topics[0] == APPROVAL_TOPIC0  # the same topic0 as ERC-20's Approval
    assert topic_address(topics[2]) == approved
    assert int(topics[3], 16) == 42
    assert log["data"] == "0x"


# -- MiniMulticall3 ---------------------------------------------------------------------------


def test_multicall3_at_the_canonical_address_answers_aggregate3(node: Anvil) -> None:
    owner, spender = node.accounts[:2]
    token = deploy_token(node)
    reverting = deploy_token(node, "RevertingAllowanceToken")
    node.send(owner, token, "approve(address,uint256)", spender, 123)
    assert node.code(MULTICALL3_ADDRESS) == b""  # absent until placed: the fallback case

    node.place_multicall3()

    calls = [
        (token, True, calldata(ALLOWANCE, owner, spender)),
        (reverting, True, calldata(ALLOWANCE, owner, spender)),
        (spender, True, calldata(ALLOWANCE, owner, spender)),  # no code: success, no data
        (MULTICALL3_ADDRESS, True, calldata("getEthBalance(address)", spender)),
        (MULTICALL3_ADDRESS, True, calldata("getBlockNumber()")),
    ]
    ((results,),) = [node.call(MULTICALL3_ADDRESS, AGGREGATE3, calls, returns=["(bool,bytes)[]"])]
    assert [success for success, _ in results] == [True, False, True, True, True]
    assert decode(["uint256"], results[0][1]) == (123,)
    assert decode(["string"], results[1][1][4:]) == ("allowance is not readable",)  # Error(string)
    assert results[2][1] == b""
    assert decode(["uint256"], results[3][1]) == (node.balance(spender),)
    assert decode(["uint256"], results[4][1]) == (node.block_number(),)


def test_multicall3_reverts_when_a_call_that_may_not_fail_fails(node: Anvil) -> None:
    owner, spender = node.accounts[:2]
    reverting = deploy_token(node, "RevertingAllowanceToken")
    node.place_multicall3()
    with pytest.raises(AnvilRpcError, match="Multicall3: call failed"):
        node.call(
            MULTICALL3_ADDRESS,
            AGGREGATE3,
            [(reverting, False, calldata(ALLOWANCE, owner, spender))],
        )


# -- history ----------------------------------------------------------------------------------


def test_revert_to_a_snapshot_removes_a_log(node: Anvil) -> None:
    owner, spender = node.accounts[:2]
    token = deploy_token(node)
    snapshot = node.snapshot()
    head = node.block_number()
    node.send(owner, token, "approve(address,uint256)", spender, 1)
    assert len(approval_logs(node, owner)) == 1

    node.revert(snapshot)

    assert approval_logs(node, owner) == []
    assert node.block_number() == head
    assert allowance(node, token, owner, spender) == 0


def test_reorg_replaces_blocks_and_drops_their_logs(node: Anvil) -> None:
    owner, spender = node.accounts[:2]
    token = deploy_token(node)
    node.send(owner, token, "approve(address,uint256)", spender, 1)
    node.mine(2)
    head = node.block(node.block_number())

    replacement = {
        "from": owner,
        "to": token,
        "data": "0x" + calldata("approve(address,uint256)", spender, 2).hex(),
    }
    node.reorg(3, [(replacement, 2)])

    assert node.block_number() == int(head["number"], 16)
    assert node.block(node.block_number())["hash"] != head["hash"]
    (log,) = approval_logs(node, owner)
    assert int(str(log["data"]), 16) == 2
    assert log["blockNumber"] == head["number"]
    assert allowance(node, token, owner, spender) == 2


# -- build.json -------------------------------------------------------------------------------


def test_build_json_matches_the_solidity_sources() -> None:
    build = json.loads(BUILD_JSON.read_text())
    sources = {
        path.name: hashlib.sha256(path.read_text().encode()).hexdigest()
        for path in sorted(BUILD_JSON.parent.glob("*.sol"))
    }
    assert build["sources"] == sources, "tests/contracts changed: run tests/contracts/compile"
    assert set(build["contracts"]) == {
        "TestToken",
        "Bytes32SymbolToken",
        "RevertingAllowanceToken",
        "FakeApprovalEmitter",
        "TestNft",
        "MiniMulticall3",
    }


def test_build_json_is_what_the_pinned_solc_compiles() -> None:
    if not (shutil.which("solcjs") or (TOOLS_BIN / "solcjs").exists()):
        pytest.fail(
            "solcjs not found: run scripts/tools (it installs the pinned npm solc)", pytrace=False
        )
    check = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "contracts" / "compile"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
