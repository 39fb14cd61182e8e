"""monitor.chain.reads: LiveReader over a fake JSON-RPC node that evaluates calls from an
in-memory table of contracts, with and without Multicall3."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from eth_abi.abi import decode, encode

from monitor.chain import abi
from monitor.chain import reads as reads_module
from monitor.chain.abi import MULTICALL3_ADDRESS
from monitor.chain.reads import (
    MALFORMED,
    NOT_ERC20,
    REVERTED,
    LiveReader,
    LiveReads,
    TokenMetadata,
    is_node_failure,
)
from monitor.chain.rpc import ChainRpc, RpcEndpoint
from monitor.errors import BadResponse, RpcError, Unavailable
from monitor.oneinch import RateLimiter
from tests.chain_helpers import Anvil, anvil_fixture

BLOCK = 1_000
WALLET = "0x" + "a1" * 20
OTHER_WALLET = "0x" + "a2" * 20
SPENDER = "0x" + "5e" * 20
TOKEN = "0x" + "70" * 20
TOKEN_B32 = "0x" + "71" * 20
NO_ALLOWANCE = "0x" + "72" * 20  # allowance() reverts, the rest works
FAKE = "0x" + "fa" * 20  # emits Approval logs, has no function at all
CATCH_ALL = "0x" + "ca" * 20  # answers any call with a word
SHORT = "0x" + "5b" * 20  # answers 31 bytes
LONG = "0x" + "1b" * 20  # answers two words
EOA = "0x" + "e0" * 20  # no code
MAX = 2**256 - 1


class Revert(Exception):
    """A contract reverting, in the fake node."""


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


Contract = Callable[[bytes], bytes]


@dataclass
class Erc20:
    """An ERC-20 in the fake node's table."""

    balances: dict[str, int] = field(default_factory=dict)
    allowances: dict[tuple[str, str], int] = field(default_factory=dict)
    symbol: bytes = encode(["string"], ["TT"])
    name: bytes = encode(["string"], ["Test Token"])
    decimals: int = 18
    allowance_reverts: bool = False

    def __call__(self, data: bytes) -> bytes:
        function, args = data[:4], data[4:]
        if function == abi.ALLOWANCE:
            if self.allowance_reverts:
                raise Revert("allowance is not readable")
            owner, spender = decode(["address", "address"], args)
            return word(self.allowances.get((owner, spender), 0))
        if function == abi.BALANCE_OF:
            (owner,) = decode(["address"], args)
            return word(self.balances.get(owner, 0))
        if function == abi.TOTAL_SUPPLY:
            return word(sum(self.balances.values()))
        if function == abi.DECIMALS:
            return word(self.decimals)
        if function == abi.SYMBOL:
            return self.symbol
        if function == abi.NAME:
            return self.name
        raise Revert("no such function")


def reverts(data: bytes) -> bytes:
    raise Revert("no function")


class FakeNode:
    """Evaluates eth_call, eth_getCode and eth_getBalance from its tables; with
    ``multicall``, Multicall3 at its canonical address runs aggregate3 and getEthBalance."""

    def __init__(self, contracts: dict[str, Contract], *, multicall: bool) -> None:
        self.contracts = dict(contracts)
        self.ether: dict[str, int] = {}
        self.multicall = multicall
        self.batches: list[list[str]] = []  # the methods of each batch
        self.code_reads = 0
        self.gas_bombs: set[str] = set()  # inside aggregate3, starve every later call of gas
        self.aggregate_answer: Callable[[], Any] | None = None  # replaces aggregate3's answer
        self.call_error: RpcError | None = None  # answers every plain eth_call
        self.failure: Exception | None = None  # raised by batch (the node is down)

    # -- the ChainRpc surface the reader uses --

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        if self.failure is not None:
            raise self.failure
        self.batches.append([method for method, _ in calls])
        return [self._answer(method, params) for method, params in calls]

    async def get_code(self, address: str, *, block: int | str = "latest") -> bytes:
        assert block == BLOCK
        self.code_reads += 1
        return self._code(address)

    # -- evaluation --

    def _code(self, address: str) -> bytes:
        if address == MULTICALL3_ADDRESS:
            return b"\x60\x80" if self.multicall else b""
        return b"\x60\x80" if address in self.contracts else b""

    def _answer(self, method: str, params: list[Any]) -> Any:
        assert params[-1] == hex(BLOCK), f"{method} read at {params[-1]}, not at {hex(BLOCK)}"
        if method == "eth_getCode":
            return "0x" + self._code(params[0]).hex()
        if method == "eth_getBalance":
            return hex(self.ether.get(params[0], 0))
        assert method == "eth_call", method
        to, data = params[0]["to"], bytes.fromhex(params[0]["data"][2:])
        if to == MULTICALL3_ADDRESS and self.multicall and data[:4] == abi.AGGREGATE3:
            if self.aggregate_answer is not None:
                return self.aggregate_answer()
            return "0x" + self._aggregate3(data).hex()
        if self.call_error is not None:
            return self.call_error
        try:
            return "0x" + self._run(to, data).hex()
        except Revert as revert:
            return RpcError(
                3, f"execution reverted: {revert}", endpoint="eth_call", origin="http://node"
            )

    def _run(self, to: str, data: bytes) -> bytes:
        if to == MULTICALL3_ADDRESS and self.multicall and data[:4] == abi.GET_ETH_BALANCE:
            (address,) = decode(["address"], data[4:])
            return word(self.ether.get(address, 0))
        contract = self.contracts.get(to)
        return b"" if contract is None else contract(data)  # a call to no code succeeds, empty

    def _aggregate3(self, data: bytes) -> bytes:
        (calls,) = decode(["(address,bool,bytes)[]"], data[4:])
        results = []
        starved = False
        for target, allow_failure, call_data in calls:
            assert allow_failure is True
            try:
                if starved:
                    raise Revert("out of gas")
                if target in self.gas_bombs:
                    starved = True
                    raise Revert("invalid opcode")
                results.append((True, self._run(target, call_data)))
            except Revert:
                results.append((False, b""))
        return encode(["(bool,bytes)[]"], [results])

    def methods(self) -> list[str]:
        return [method for batch in self.batches for method in batch]


def node(*, multicall: bool) -> FakeNode:
    token = Erc20(
        balances={WALLET: 5_000, OTHER_WALLET: 7},
        allowances={(WALLET, SPENDER): MAX, (OTHER_WALLET, SPENDER): 1_234},
    )
    chain = FakeNode(
        {
            TOKEN: token,
            TOKEN_B32: Erc20(
                balances={WALLET: 1},
                symbol=b"MKR".ljust(32, b"\x00"),
                name=b"Maker".ljust(32, b"\x00"),
            ),
            NO_ALLOWANCE: Erc20(balances={WALLET: 9}, allowance_reverts=True),
            FAKE: reverts,
            CATCH_ALL: lambda data: word(10**30),
            SHORT: lambda data: b"\x01" * 31,
            LONG: lambda data: word(1) + word(2),
        },
        multicall=multicall,
    )
    chain.ether = {WALLET: 10**18, OTHER_WALLET: 0}
    return chain


@pytest.fixture(params=[True, False], ids=["multicall", "plain"])
def chain(request: pytest.FixtureRequest) -> FakeNode:
    return node(multicall=request.param)


async def read(
    reader: LiveReader, tokens: Sequence[str], wallets: Sequence[str] = (WALLET,)
) -> LiveReads:
    return await reader.read(
        block=BLOCK,
        allowances=[(w, t, SPENDER) for w in wallets for t in tokens],
        balances=[(w, t) for w in wallets for t in tokens],
        natives=list(wallets),
    )


# --- reads --------------------------------------------------------------------------------


async def test_allowances_balances_and_natives_are_read_exactly(chain: FakeNode) -> None:
    reads = await read(LiveReader(chain), [TOKEN], [WALLET, OTHER_WALLET])
    assert reads.block == BLOCK
    assert reads.allowances == {
        (WALLET, TOKEN, SPENDER): MAX,
        (OTHER_WALLET, TOKEN, SPENDER): 1_234,
    }
    assert reads.balances == {(WALLET, TOKEN): 5_000, (OTHER_WALLET, TOKEN): 7}
    assert reads.natives == {WALLET: 10**18, OTHER_WALLET: 0}
    assert reads.unreadable == 0


async def test_with_multicall_every_call_goes_through_aggregate3() -> None:
    chain = node(multicall=True)
    wallets = [WALLET, OTHER_WALLET]
    reader = LiveReader(chain, calls_per_multicall=2, multicalls_per_batch=2)
    reads = await read(reader, [TOKEN, TOKEN_B32], wallets)
    assert reads.unreadable == 0
    assert set(chain.methods()) == {"eth_call"}  # natives too: getEthBalance inside aggregate3
    # 4 allowances + 4 balances + 2 tokens x 2 checks + 2 natives = 14 calls: 7 aggregates of
    # 2, sent 2 to a batch.
    assert [len(b) for b in chain.batches] == [2, 2, 2, 1]


def body_bytes(calls: Sequence[tuple[str, list[Any]]]) -> int:
    """The size of ``calls`` as one JSON-RPC batch body (spaces after separators: a little
    more than ChainRpc sends)."""
    return len(
        json.dumps(
            [
                {"jsonrpc": "2.0", "id": 10_000 + i, "method": method, "params": params}
                for i, (method, params) in enumerate(calls)
            ]
        )
    )


def recording_bodies(chain: FakeNode) -> list[tuple[int, int]]:
    """(aggregates, body bytes) of each batch of aggregates ``chain`` answers from now on."""
    bodies: list[tuple[int, int]] = []
    answer = chain.batch
    aggregate3 = "0x" + abi.AGGREGATE3.hex()

    async def batch(calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        if all(params[0]["data"].startswith(aggregate3) for _, params in calls):
            bodies.append((len(calls), body_bytes(calls)))
        return await answer(calls)

    chain.batch = batch  # type: ignore[method-assign]
    return bodies


async def test_aggregates_share_a_batch_only_while_its_body_stays_under_the_cap() -> None:
    chain = node(multicall=True)
    bodies = recording_bodies(chain)
    wallets = ["0x" + f"{i:040x}" for i in range(1, 31)]
    token = chain.contracts[TOKEN]
    assert isinstance(token, Erc20)
    token.allowances.update({(w, SPENDER): i for i, w in enumerate(wallets)})
    # 60 reads + 2 token checks + 30 natives in aggregates of 4: ~2.2 kB a request.
    reader = LiveReader(chain, calls_per_multicall=4, max_batch_bytes=5_000)
    reads = await read(reader, [TOKEN], wallets)
    assert reads.unreadable == 0
    assert reads.allowances == {(w, TOKEN, SPENDER): i for i, w in enumerate(wallets)}
    assert sum(calls for calls, _ in bodies) == 23  # ceil(92 / 4) aggregates
    assert all(size <= 5_000 for _, size in bodies)
    assert max(calls for calls, _ in bodies) == 2  # not one by one either


async def test_an_aggregate_over_the_cap_is_sent_alone() -> None:
    chain = node(multicall=True)
    bodies = recording_bodies(chain)
    reader = LiveReader(chain, calls_per_multicall=3, max_batch_bytes=1)
    reads = await read(reader, [TOKEN, TOKEN_B32], [WALLET, OTHER_WALLET])
    assert reads.unreadable == 0
    assert [calls for calls, _ in bodies] == [1] * 5  # 14 calls in aggregates of 3


async def test_by_default_no_batch_body_exceeds_512_kib() -> None:
    """1,000 calls an aggregate make ~512 KB requests: one to a batch, so that no body
    limit (aiohttp's 1 MiB, providers' lower ones) answers 413."""
    chain = node(multicall=True)
    bodies = recording_bodies(chain)
    wallets = ["0x" + f"{i:040x}" for i in range(1, 1001)]
    reads = await read(LiveReader(chain), [TOKEN, TOKEN_B32], wallets)
    assert reads.unreadable == 0
    # 4,000 reads + 4 token checks + 1,000 natives: 6 aggregates of up to 1,000 calls
    assert sum(calls for calls, _ in bodies) == 6
    assert all(size <= 512 * 1024 for _, size in bodies)
    assert max(size for _, size in bodies) > 400 * 1024  # the aggregates are that large


async def test_reading_the_same_pairs_again_reuses_their_calldata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain = node(multicall=True)
    encoded: list[int] = []
    encode_aggregate3 = reads_module.encode_aggregate3

    def counting(calls: Sequence[tuple[str, bytes]]) -> bytes:
        encoded.append(len(calls))
        return encode_aggregate3(calls)

    monkeypatch.setattr(reads_module, "encode_aggregate3", counting)
    reader = LiveReader(chain, calls_per_multicall=4)
    first = await read(reader, [TOKEN, TOKEN_B32], [WALLET, OTHER_WALLET])
    assert len(encoded) == 4  # 14 calls
    token = chain.contracts[TOKEN]
    assert isinstance(token, Erc20)
    token.allowances[(WALLET, SPENDER)] = 5  # the values change, the calls do not
    again = await read(reader, [TOKEN, TOKEN_B32], [WALLET, OTHER_WALLET])
    assert len(encoded) == 4
    assert again.allowances == {**first.allowances, (WALLET, TOKEN, SPENDER): 5}


async def test_other_pairs_are_read_with_their_own_calldata() -> None:
    """Calldata is reused only for the very same calls: a read of other pairs, or of the
    first ones again after them, reads what it asks."""
    chain = node(multicall=True)
    reader = LiveReader(chain, calls_per_multicall=4)
    both = await read(reader, [TOKEN], [WALLET, OTHER_WALLET])
    assert both.allowances == {(WALLET, TOKEN, SPENDER): MAX, (OTHER_WALLET, TOKEN, SPENDER): 1_234}
    other = await read(reader, [TOKEN], [OTHER_WALLET, WALLET])
    assert other.allowances == both.allowances
    assert other.natives == {OTHER_WALLET: 0, WALLET: 10**18}
    one = await read(reader, [TOKEN_B32, TOKEN], [WALLET])
    assert one.allowances == {(WALLET, TOKEN_B32, SPENDER): 0, (WALLET, TOKEN, SPENDER): MAX}
    assert one.balances == {(WALLET, TOKEN_B32): 1, (WALLET, TOKEN): 5_000}
    assert await read(reader, [TOKEN], [WALLET, OTHER_WALLET]) == both


async def test_without_multicall_plain_calls_and_get_balance_are_batched() -> None:
    chain = node(multicall=False)
    reader = LiveReader(chain, calls_per_multicall=3)
    reads = await read(reader, [TOKEN, TOKEN_B32], [WALLET, OTHER_WALLET])
    assert reads.unreadable == 0
    assert chain.methods().count("eth_getBalance") == 2
    assert chain.methods().count("eth_call") == 12
    assert max(len(b) for b in chain.batches) == 3


async def test_multicall_presence_is_asked_once_per_reader() -> None:
    chain = node(multicall=True)
    reader = LiveReader(chain)
    assert await reader.multicall_available(block=BLOCK)
    await read(reader, [TOKEN])
    await read(reader, [TOKEN])
    assert chain.code_reads == 1
    assert not await LiveReader(node(multicall=False)).multicall_available(block=BLOCK)


@pytest.mark.parametrize(
    ("token", "allowance_error", "balance_error"),
    [
        (NO_ALLOWANCE, REVERTED, None),
        (FAKE, REVERTED, REVERTED),
        (EOA, MALFORMED, MALFORMED),
        (SHORT, MALFORMED, MALFORMED),
        (LONG, MALFORMED, MALFORMED),
        (CATCH_ALL, NOT_ERC20, NOT_ERC20),
    ],
    ids=["allowance-reverts", "fake-approval-emitter", "no-code", "short", "long", "catch-all"],
)
async def test_a_call_that_fails_or_answers_garbage_is_unreadable_and_alone(
    chain: FakeNode, token: str, allowance_error: str, balance_error: str | None
) -> None:
    reads = await read(LiveReader(chain, calls_per_multicall=4), [token, TOKEN])
    assert reads.allowances[(WALLET, token, SPENDER)] is None
    assert reads.allowance_errors == {(WALLET, token, SPENDER): allowance_error}
    if balance_error is None:
        assert reads.balances[(WALLET, token)] == 9
        assert reads.balance_errors == {}
    else:
        assert reads.balances[(WALLET, token)] is None
        assert reads.balance_errors == {(WALLET, token): balance_error}
    # the real token beside it reads as ever
    assert reads.allowances[(WALLET, TOKEN, SPENDER)] == MAX
    assert reads.balances[(WALLET, TOKEN)] == 5_000
    assert reads.natives == {WALLET: 10**18}


async def test_duplicates_are_read_once() -> None:
    chain = node(multicall=False)
    reads = await LiveReader(chain).read(
        block=BLOCK,
        allowances=[(WALLET, TOKEN, SPENDER)] * 3,
        balances=[(WALLET, TOKEN)] * 2,
        natives=[WALLET, WALLET],
    )
    assert chain.methods().count("eth_call") == 4  # allowance, balanceOf, 2 token checks
    assert chain.methods().count("eth_getBalance") == 1
    assert reads.allowances == {(WALLET, TOKEN, SPENDER): MAX}


async def test_nothing_to_read_reads_nothing(chain: FakeNode) -> None:
    reads = await LiveReader(chain).read(block=BLOCK, allowances=[], balances=[], natives=[])
    assert (reads.allowances, reads.balances, reads.natives) == ({}, {}, {})
    assert chain.batches == []


async def test_calls_starved_by_a_gas_burning_call_are_read_again_on_their_own() -> None:
    """A call that burns all its gas leaves none for the calls after it in the aggregate."""
    chain = node(multicall=True)
    chain.gas_bombs = {FAKE}
    reads = await read(LiveReader(chain), [TOKEN, FAKE, NO_ALLOWANCE])
    assert reads.allowances == {
        (WALLET, TOKEN, SPENDER): MAX,
        (WALLET, FAKE, SPENDER): None,
        (WALLET, NO_ALLOWANCE, SPENDER): None,
    }
    assert reads.balances == {
        (WALLET, TOKEN): 5_000,
        (WALLET, FAKE): None,
        (WALLET, NO_ALLOWANCE): 9,
    }
    assert reads.natives == {WALLET: 10**18}
    assert reads.allowance_errors == {
        (WALLET, FAKE, SPENDER): REVERTED,
        (WALLET, NO_ALLOWANCE, SPENDER): REVERTED,
    }
    # 3 allowances + 3 balances + 3 x 2 token checks + 1 native: all but the first, which
    # answered before the bomb, are read again directly.
    assert chain.methods().count("eth_call") == 1 + 12


async def test_failures_inside_an_aggregate_are_not_read_again() -> None:
    chain = node(multicall=True)
    reads = await read(LiveReader(chain), [FAKE, NO_ALLOWANCE, TOKEN])
    assert reads.allowance_errors == {
        (WALLET, FAKE, SPENDER): REVERTED,
        (WALLET, NO_ALLOWANCE, SPENDER): REVERTED,
    }
    assert chain.methods() == ["eth_call"]  # one aggregate, nothing else


@pytest.mark.parametrize(
    "answer",
    [
        lambda: RpcError(-32000, "out of gas", endpoint="eth_call", origin="http://node"),
        lambda: RpcError(3, "execution reverted", endpoint="eth_call", origin="http://node"),
        lambda: "0x1234",
        lambda: "0x" + encode(["(bool,bytes)[]"], [[(True, word(1))]]).hex(),  # wrong count
        lambda: 17,
    ],
    ids=["out-of-gas", "reverted", "garbage", "wrong-count", "not-hex"],
)
async def test_an_aggregate_that_fails_whole_is_read_call_by_call(
    answer: Callable[[], Any],
) -> None:
    chain = node(multicall=True)
    chain.aggregate_answer = answer
    reads = await read(LiveReader(chain), [TOKEN, FAKE])
    assert reads.allowances == {(WALLET, TOKEN, SPENDER): MAX, (WALLET, FAKE, SPENDER): None}
    assert reads.natives == {WALLET: 10**18}  # getEthBalance on Multicall3 itself, directly


async def test_a_node_failure_is_raised(chain: FakeNode) -> None:
    chain.failure = Unavailable("connection refused", endpoint="eth_call", attempts=5)
    with pytest.raises(Unavailable):
        await read(LiveReader(chain), [TOKEN])


@pytest.mark.parametrize(
    ("error", "node_failure"),
    [
        (RpcError(-32000, "header not found", endpoint="eth_call", origin="o"), True),
        (RpcError(-32000, "missing trie node 1a2b (path )", endpoint="eth_call", origin="o"), True),
        (
            RpcError(
                -32601,
                "the method eth_call does not exist/is not available",
                endpoint="eth_call",
                origin="o",
            ),
            True,
        ),
        (
            RpcError(
                -32005,
                "daily request count exceeded, request rate limited",
                endpoint="eth_call",
                origin="o",
            ),
            True,
        ),
        (
            RpcError(3, "execution reverted: header not found", endpoint="eth_call", origin="o"),
            False,
        ),
        (RpcError(-32000, "execution reverted", endpoint="eth_call", origin="o"), False),
        (RpcError(-32000, "out of gas", endpoint="eth_call", origin="o"), False),
        (RpcError(-32015, "VM execution error.", endpoint="eth_call", origin="o"), False),
    ],
)
def test_node_failures_are_told_from_reverts(error: RpcError, node_failure: bool) -> None:
    assert is_node_failure(error) is node_failure


async def test_a_node_error_object_answering_calls_is_raised_not_read_as_unreadable() -> None:
    chain = node(multicall=False)
    chain.call_error = RpcError(-32000, "header not found", endpoint="eth_call", origin="o")
    with pytest.raises(RpcError, match="header not found"):
        await read(LiveReader(chain), [TOKEN])


async def test_a_revert_whatever_its_reason_is_only_unreadable() -> None:
    chain = node(multicall=False)
    chain.call_error = RpcError(
        3, "execution reverted: header not found", endpoint="eth_call", origin="o"
    )
    reads = await read(LiveReader(chain), [TOKEN])
    assert reads.allowances == {(WALLET, TOKEN, SPENDER): None}
    assert reads.natives == {WALLET: 10**18}


async def test_a_garbage_native_balance_is_unreadable() -> None:
    chain = node(multicall=False)

    async def garbage_balances(calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        return ["0xzz" if method == "eth_getBalance" else "0x" for method, _ in calls]

    chain.batch = garbage_balances  # type: ignore[method-assign]
    reads = await LiveReader(chain).read(block=BLOCK, allowances=[], balances=[], natives=[WALLET])
    assert reads.natives == {WALLET: None}
    assert reads.native_errors == {WALLET: MALFORMED}


def test_reader_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="calls_per_multicall"):
        LiveReader(node(multicall=True), calls_per_multicall=0)


# --- metadata and code --------------------------------------------------------------------


async def test_token_metadata_tolerates_bytes32_reverts_and_non_tokens(chain: FakeNode) -> None:
    chain.contracts["0x" + "de" * 20] = Erc20(decimals=300, symbol=b"\xff" * 64)
    metadata = await LiveReader(chain, calls_per_multicall=7).token_metadata(
        [TOKEN, TOKEN_B32, FAKE, CATCH_ALL, EOA, "0x" + "de" * 20, TOKEN], block=BLOCK
    )
    assert metadata == {
        TOKEN: TokenMetadata(symbol="TT", name="Test Token", decimals=18, is_token=True),
        TOKEN_B32: TokenMetadata(symbol="MKR", name="Maker", decimals=18, is_token=True),
        FAKE: TokenMetadata(symbol=None, name=None, decimals=None, is_token=False),
        CATCH_ALL: TokenMetadata(symbol=None, name=None, decimals=None, is_token=False),
        EOA: TokenMetadata(symbol=None, name=None, decimals=None, is_token=False),
        "0x" + "de" * 20: TokenMetadata(
            symbol=None, name="Test Token", decimals=None, is_token=True
        ),
    }


async def test_has_code_tells_contracts_from_accounts(chain: FakeNode) -> None:
    codes = await LiveReader(chain).has_code([TOKEN, EOA, SPENDER], block=BLOCK)
    assert codes == {TOKEN: True, EOA: False, SPENDER: False}
    assert set(chain.methods()) == {"eth_getCode"}


async def test_has_code_raises_a_node_error() -> None:
    chain = node(multicall=False)

    async def refusing(calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        return [RpcError(-32000, "header not found", endpoint=m, origin="o") for m, _ in calls]

    chain.batch = refusing  # type: ignore[method-assign]
    with pytest.raises(RpcError):
        await LiveReader(chain).has_code([TOKEN], block=BLOCK)


# --- on a real node -----------------------------------------------------------------------

anvil = anvil_fixture()


@pytest.mark.parametrize("multicall", [True, False], ids=["multicall", "plain"])
async def test_a_real_node_reads_live_values_at_the_block_asked(
    anvil: Anvil, multicall: bool
) -> None:
    owner, spender, spender2, recipient = anvil.accounts[:4]
    if multicall:
        anvil.place_multicall3()
    token = anvil.deploy("TestToken", "Test Token", "TST", 6)
    anvil.send(owner, token, "mint(address,uint256)", owner, 1_000)
    anvil.send(owner, token, "approve(address,uint256)", spender, MAX)
    anvil.send(owner, token, "approve(address,uint256)", spender2, 500)
    anvil.send(spender2, token, "transferFrom(address,address,uint256)", owner, recipient, 200)
    maker = anvil.deploy(
        "Bytes32SymbolToken", b"Maker".ljust(32, b"\0"), b"MKR".ljust(32, b"\0"), 18
    )
    anvil.send(owner, maker, "mint(address,uint256)", owner, 7)
    anvil.send(owner, maker, "approve(address,uint256)", spender, 1)
    bad = anvil.deploy("RevertingAllowanceToken", "Bad", "BAD", 18)
    anvil.send(owner, bad, "mint(address,uint256)", owner, 9)
    anvil.send(owner, bad, "approve(address,uint256)", spender, 3)
    fake = anvil.deploy("FakeApprovalEmitter")
    anvil.send(owner, fake, "emitApproval(address,address,uint256)", owner, spender, MAX)
    block = anvil.block_number()
    native = int(anvil.rpc("eth_getBalance", [owner, hex(block)]), 16)
    anvil.send(owner, token, "approve(address,uint256)", spender, 0)  # after the block read

    async with aiohttp.ClientSession() as session:
        rpc = ChainRpc(
            session,
            RpcEndpoint(chain_id=1, url=anvil.url, origin="test"),
            limiter=RateLimiter(1000),
            max_attempts=1,
        )
        reader = LiveReader(rpc)
        tokens = [token, maker, bad, fake, recipient]
        reads = await reader.read(
            block=block,
            allowances=[(owner, t, spender) for t in tokens] + [(owner, token, spender2)],
            balances=[(owner, t) for t in tokens],
            natives=[owner, recipient],
        )
        assert await reader.multicall_available(block=block) is multicall
        assert reads.allowances == {
            (owner, token, spender): MAX,  # the revoke came after the block
            (owner, token, spender2): 300,  # the event said 500: transferFrom spent 200
            (owner, maker, spender): 1,
            (owner, bad, spender): None,
            (owner, fake, spender): None,
            (owner, recipient, spender): None,
        }
        assert reads.allowance_errors == {
            (owner, bad, spender): REVERTED,
            (owner, fake, spender): REVERTED,
            (owner, recipient, spender): MALFORMED,
        }
        assert reads.balances == {
            (owner, token): 800,
            (owner, maker): 7,
            (owner, bad): 9,
            (owner, fake): None,
            (owner, recipient): None,
        }
        assert reads.natives == {owner: native, recipient: anvil.balance(recipient)}
        assert rpc.requests_sent <= 3  # eth_getCode, then one batch (or two without multicall)

        metadata = await reader.token_metadata([token, maker, bad, fake, recipient], block=block)
        assert metadata == {
            token: TokenMetadata(symbol="TST", name="Test Token", decimals=6, is_token=True),
            maker: TokenMetadata(symbol="MKR", name="Maker", decimals=18, is_token=True),
            bad: TokenMetadata(symbol="BAD", name="Bad", decimals=18, is_token=True),
            fake: TokenMetadata(symbol=None, name=None, decimals=None, is_token=False),
            recipient: TokenMetadata(symbol=None, name=None, decimals=None, is_token=False),
        }
        assert await reader.has_code([token, recipient], block=block) == {
            token: True,
            recipient: False,
        }


async def test_code_that_is_no_hex_data_is_a_bad_response() -> None:
    chain = node(multicall=False)

    async def garbage(calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        return ["0xzz" for _ in calls]

    chain.batch = garbage  # type: ignore[method-assign]
    with pytest.raises(BadResponse, match=TOKEN):
        await LiveReader(chain).has_code([TOKEN], block=BLOCK)
