"""A real Ethereum node for the chain tests: anvil (Foundry's, from npm, pinned by
scripts/tools) as a process on a free loopback port, with the test contracts of
``tests/contracts`` (compiled into ``tests/contracts/build.json``) ready to deploy.

    with Anvil() as node:                       # --chain-id 1, auto-mining, a port of its own
        owner, spender = node.accounts[:2]
        token = node.deploy("TestToken", "Test", "TST", 18)
        node.send(owner, token, "mint(address,uint256)", owner, 10**18)
        node.send(owner, token, "approve(address,uint256)", spender, 5)
        (allowed,) = node.call(token, "allowance(address,address)", owner, spender,
                               returns=["uint256"])
        node.place_multicall3()                 # MiniMulticall3 at Multicall3's address

In a test module, ``node = anvil_fixture()`` makes a fixture named ``node``.

anvil is looked up on PATH, then in ``.tools/bin``; when it is in neither place the test
fails (never skips) and names scripts/tools, which installs it. Addresses come back as
lowercase ``0x`` hex; amounts are Python ints, exact.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pytest
from eth_abi.abi import decode, encode

from monitor.domain.keccak import keccak256

ROOT = Path(__file__).resolve().parent.parent
BUILD_JSON = ROOT / "tests" / "contracts" / "build.json"
TOOLS_BIN = ROOT / ".tools" / "bin"
CHAIN_ID = 1
MULTICALL3_ADDRESS = "0xca11bde05977b3631167028862be2a173976ca11"
APPROVAL_TOPIC0 = "0x" + keccak256(b"Approval(address,address,uint256)").hex()
TRANSFER_TOPIC0 = "0x" + keccak256(b"Transfer(address,address,uint256)").hex()
UINT256_MAX = 2**256 - 1

_LISTENING = re.compile(r"Listening on (\S+):(\d+)")


class AnvilRpcError(Exception):
    """A JSON-RPC error object from anvil (a revert, an unknown method, bad params)."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.method = method
        self.code: int = error.get("code", 0)
        self.rpc_message: str = error.get("message", "")
        self.data: Any = error.get("data")
        super().__init__(f"{method}: JSON-RPC error {self.code}: {self.rpc_message}")


class TransactionReverted(Exception):
    """A transaction was mined with status 0 (anvil mines reverting transactions)."""

    def __init__(self, receipt: dict[str, Any], reason: str) -> None:
        self.receipt = receipt
        self.reason = reason
        super().__init__(f"transaction {receipt['transactionHash']} reverted: {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """One compiled test contract from build.json."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes  # creation code
    deployed_bytecode: bytes  # runtime code, what anvil_setCode places

    def constructor_types(self) -> list[str]:
        for entry in self.abi:
            if entry["type"] == "constructor":
                return [abi_type(item) for item in entry["inputs"]]
        return []


def abi_type(item: dict[str, Any]) -> str:
    """The canonical type string of an ABI input or output (tuples spelled out)."""
    kind: str = item["type"]
    if kind.startswith("tuple"):
        inner = ",".join(abi_type(component) for component in item["components"])
        return f"({inner}){kind.removeprefix('tuple')}"
    return kind


@functools.cache
def artifacts() -> dict[str, Artifact]:
    """Every contract of build.json by name (TestToken, MiniMulticall3, ...)."""
    build = json.loads(BUILD_JSON.read_text())
    return {
        name: Artifact(
            name=name,
            abi=compiled["abi"],
            bytecode=bytes.fromhex(compiled["bytecode"].removeprefix("0x")),
            deployed_bytecode=bytes.fromhex(compiled["deployedBytecode"].removeprefix("0x")),
        )
        for name, compiled in build["contracts"].items()
    }


def selector(signature: str) -> bytes:
    """The 4-byte function selector of ``signature``, e.g. ``"approve(address,uint256)"``."""
    return keccak256(signature.encode())[:4]


def signature_types(signature: str) -> list[str]:
    """The argument types of a function signature, tuples kept whole:
    ``"aggregate3((address,bool,bytes)[])"`` -> ``["(address,bool,bytes)[]"]``."""
    inner = signature[signature.index("(") + 1 : signature.rindex(")")]
    types: list[str] = []
    depth = 0
    start = 0
    for index, char in enumerate(inner):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            types.append(inner[start:index])
            start = index + 1
    if inner:
        types.append(inner[start:])
    return types


def calldata(signature: str, *args: Any) -> bytes:
    """Selector plus ABI-encoded arguments for a call of ``signature``."""
    return selector(signature) + encode(signature_types(signature), args)


def topic_address(topic: str) -> str:
    """The address in a 32-byte log topic, lowercase."""
    return "0x" + topic[-40:].lower()


def anvil_binary() -> str:
    """anvil on PATH, else in .tools/bin; fails the test, naming scripts/tools, when absent."""
    found = shutil.which("anvil") or shutil.which("anvil", path=str(TOOLS_BIN))
    if found is None:
        pytest.fail(
            "anvil not found on PATH nor in .tools/bin: run scripts/tools (it installs "
            "@foundry-rs/anvil from npm into .tools) and put its output on PATH, as scripts/test "
            "does. The chain tests never skip.",
            pytrace=False,
        )
    return found


def _hex(number: int) -> str:
    return hex(number)


class Anvil:
    """An anvil process on 127.0.0.1 and a small synchronous JSON-RPC client for it.

    ``block_time_s`` None and ``auto_mine`` True (the default): each transaction is mined
    into a block of its own at once. ``auto_mine`` False: nothing is mined until ``mine()``.
    ``block_time_s`` set: a block every so many seconds (interval mining). ``extra_args`` go to
    anvil as they are (e.g. ``["--timestamp", "1700000000"]``).
    """

    def __init__(
        self,
        *,
        chain_id: int = CHAIN_ID,
        block_time_s: float | None = None,
        auto_mine: bool = True,
        extra_args: Sequence[str] = (),
        start_timeout_s: float = 30.0,
        rpc_timeout_s: float = 30.0,
    ) -> None:
        self.chain_id = chain_id
        self.block_time_s = block_time_s
        self.auto_mine = auto_mine and block_time_s is None
        self.extra_args = list(extra_args)
        self.start_timeout_s = start_timeout_s
        self.rpc_timeout_s = rpc_timeout_s
        self.url = ""
        self.port = 0
        self.accounts: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._request_id = 0

    # -- process ----------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """anvil's own output (one line per RPC method served); for failure messages."""
        assert self._workdir is not None, "anvil is not started"
        return Path(self._workdir.name) / "anvil.log"

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def start(self) -> Anvil:
        """Starts anvil on a free port (anvil picks it: no race) and waits until it answers."""
        if self._process is not None:
            raise RuntimeError("anvil is already started")
        args = [anvil_binary(), "--host", "127.0.0.1", "--port", "0"]
        args += ["--chain-id", str(self.chain_id)]
        if self.block_time_s is not None:
            args += ["--block-time", str(self.block_time_s)]
        elif not self.auto_mine:
            args.append("--no-mining")
        args += self.extra_args
        self._workdir = tempfile.TemporaryDirectory(prefix="anvil-")
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self._wait_listening(args)
            self.accounts = [account.lower() for account in self.rpc("eth_accounts")]
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, args: list[str]) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            with contextlib.suppress(OSError):
                match = _LISTENING.search(self.log_path.read_text(errors="replace"))
                if match:
                    self.port = int(match.group(2))
                    self.url = f"http://127.0.0.1:{self.port}"
                    break
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"anvil did not start ({self._process.returncode=}): {' '.join(args)}\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)
        answered = int(self.rpc("eth_chainId"), 16)
        assert answered == self.chain_id, f"anvil answers chain id {answered}"

    def stop(self) -> None:
        """Stops anvil (SIGTERM, then SIGKILL after 5 s) and removes its folder. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            workdir.cleanup()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- JSON-RPC ---------------------------------------------------------------------------

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC request; the ``result``, or AnvilRpcError for an error object."""
        self._request_id += 1
        body = {"jsonrpc": "2.0", "id": self._request_id, "method": method, "params": list(params)}
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.rpc_timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.URLError as exc:
            raise AssertionError(
                f"{method}: anvil did not answer: {exc}\n{self.log_tail()}"
            ) from exc
        if "error" in answer:
            raise AnvilRpcError(method, answer["error"])
        return answer["result"]

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block(self, number: int | Literal["latest"] = "latest") -> dict[str, Any]:
        tag = number if isinstance(number, str) else _hex(number)
        block: dict[str, Any] = self.rpc("eth_getBlockByNumber", [tag, False])
        return block

    def block_timestamp(self, number: int | Literal["latest"] = "latest") -> int:
        return int(self.block(number)["timestamp"], 16)

    def balance(self, address: str) -> int:
        return int(self.rpc("eth_getBalance", [address, "latest"]), 16)

    def code(self, address: str) -> bytes:
        return bytes.fromhex(self.rpc("eth_getCode", [address, "latest"]).removeprefix("0x"))

    def logs(
        self,
        *,
        from_block: int = 0,
        to_block: int | Literal["latest"] = "latest",
        address: str | Sequence[str] | None = None,
        topics: Sequence[str | Sequence[str] | None] = (),
    ) -> list[dict[str, Any]]:
        """eth_getLogs over blocks ``from_block`` to ``to_block`` (raw log objects)."""
        query: dict[str, Any] = {
            "fromBlock": _hex(from_block),
            "toBlock": to_block if isinstance(to_block, str) else _hex(to_block),
            "topics": [
                topic if topic is None or isinstance(topic, str) else list(topic)
                for topic in topics
            ],
        }
        if address is not None:
            query["address"] = address if isinstance(address, str) else list(address)
        found: list[dict[str, Any]] = self.rpc("eth_getLogs", [query])
        return found

    # -- contracts and transactions ---------------------------------------------------------

    def transact(self, tx: dict[str, Any], *, check: bool = True) -> dict[str, Any]:
        """eth_sendTransaction of ``tx`` (``from`` unlocked or impersonated), then its receipt
        once mined (mining a block first when the node does not mine by itself).
        TransactionReverted, with the revert reason, when it is mined with status 0 and
        ``check`` is true."""
        return self.receipt(self.submit(tx), check=check)

    def submit(self, tx: dict[str, Any]) -> str:
        """eth_sendTransaction without waiting for a block; the transaction hash."""
        tx_hash: str = self.rpc("eth_sendTransaction", [tx])
        return tx_hash

    def receipt(self, tx_hash: str, *, check: bool = True) -> dict[str, Any]:
        """The receipt of ``tx_hash``, waiting (and mining, when nothing else mines) for it."""
        deadline = time.monotonic() + self.rpc_timeout_s
        mined = False
        while True:
            receipt: dict[str, Any] | None = self.rpc("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                break
            if not self.auto_mine and self.block_time_s is None and not mined:
                self.mine()
                mined = True
                continue
            if time.monotonic() > deadline:
                raise AssertionError(f"transaction {tx_hash} not mined in {self.rpc_timeout_s} s")
            time.sleep(0.05)
        if check and int(receipt["status"], 16) != 1:
            raise TransactionReverted(receipt, self._revert_reason(receipt))
        return receipt

    def _revert_reason(self, receipt: dict[str, Any]) -> str:
        """Why a mined transaction reverted, by replaying it as a call on its parent block
        (best effort: earlier transactions of the same block are not replayed)."""
        tx = self.rpc("eth_getTransactionByHash", [receipt["transactionHash"]])
        call = {key: tx[key] for key in ("from", "to", "input", "value", "gas") if tx.get(key)}
        parent = _hex(int(receipt["blockNumber"], 16) - 1)
        try:
            self.rpc("eth_call", [call, parent])
        except AnvilRpcError as exc:
            return exc.rpc_message
        return "unknown (the replayed call succeeds)"

    def deploy(self, name: str, *args: Any, from_: str | None = None) -> str:
        """Deploys the contract ``name`` of build.json with constructor ``args``; its address."""
        artifact = artifacts()[name]
        data = artifact.bytecode + encode(artifact.constructor_types(), args)
        receipt = self.transact({"from": from_ or self.accounts[0], "data": "0x" + data.hex()})
        address: str = receipt["contractAddress"]
        return address.lower()

    def send(
        self, from_: str, to: str, signature: str, *args: Any, value_wei: int = 0
    ) -> dict[str, Any]:
        """A mined transaction from ``from_`` calling ``signature`` (e.g.
        ``"approve(address,uint256)"``) on ``to`` with ``args``; the receipt."""
        tx = {"from": from_, "to": to, "data": "0x" + calldata(signature, *args).hex()}
        if value_wei:
            tx["value"] = _hex(value_wei)
        return self.transact(tx)

    def call(
        self,
        to: str,
        signature: str,
        *args: Any,
        returns: Sequence[str] = (),
        block: int | Literal["latest"] = "latest",
    ) -> tuple[Any, ...]:
        """eth_call of ``signature`` on ``to``; the answer decoded as ``returns`` types (eth-abi
        values: ints, checksummed address strings, bytes). AnvilRpcError on a revert."""
        answer = self.call_raw(to, calldata(signature, *args), block=block)
        return tuple(decode(list(returns), answer)) if returns else ()

    def call_raw(self, to: str, data: bytes, *, block: int | Literal["latest"] = "latest") -> bytes:
        tag = block if isinstance(block, str) else _hex(block)
        answer: str = self.rpc("eth_call", [{"to": to, "data": "0x" + data.hex()}, tag])
        return bytes.fromhex(answer.removeprefix("0x"))

    # -- anvil's test methods ---------------------------------------------------------------

    def mine(self, blocks: int = 1, *, interval_s: int | None = None) -> None:
        """Mines ``blocks`` empty (or pending-transaction) blocks at once (anvil_mine)."""
        params = [_hex(blocks)] + ([] if interval_s is None else [_hex(interval_s)])
        self.rpc("anvil_mine", params)

    def set_next_block_timestamp(self, unix_s: int) -> None:
        self.rpc("evm_setNextBlockTimestamp", [unix_s])

    def set_code(self, address: str, runtime: bytes | str) -> None:
        """Puts runtime bytecode at ``address`` (anvil_setCode); empty bytes remove it."""
        code = runtime if isinstance(runtime, str) else "0x" + runtime.hex()
        self.rpc("anvil_setCode", [address, code])

    def place_multicall3(self) -> None:
        """MiniMulticall3's runtime code at Multicall3's canonical address."""
        self.set_code(MULTICALL3_ADDRESS, artifacts()["MiniMulticall3"].deployed_bytecode)

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [address, _hex(wei)])

    def impersonate(self, address: str, *, fund_wei: int | None = 10**18) -> None:
        """Lets ``send``/``transact`` use ``address`` as ``from`` without its key; gives it
        ``fund_wei`` for gas (None leaves its balance alone)."""
        self.rpc("anvil_impersonateAccount", [address])
        if fund_wei is not None:
            self.set_balance(address, fund_wei)

    def stop_impersonating(self, address: str) -> None:
        self.rpc("anvil_stopImpersonatingAccount", [address])

    def snapshot(self) -> str:
        """evm_snapshot: an id for ``revert``. Reverting consumes the snapshot (and later ones)."""
        snapshot_id: str = self.rpc("evm_snapshot")
        return snapshot_id

    def revert(self, snapshot_id: str) -> None:
        """evm_revert: the chain as it was at ``snapshot``, blocks since then gone."""
        if not self.rpc("evm_revert", [snapshot_id]):
            raise AssertionError(f"evm_revert refused snapshot {snapshot_id}")

    def reorg(self, depth: int, txs: Sequence[tuple[dict[str, Any], int]] = ()) -> None:
        """anvil_reorg: replaces the newest ``depth`` blocks by as many new ones (the head keeps
        its number, block hashes change); the transactions of the replaced blocks are dropped.
        ``txs`` are (transaction, block offset 0..depth-1) pairs mined into the new blocks.
        A transaction without ``gas`` gets 1,000,000: anvil would estimate it against the
        state before the reorg, and too low an estimate makes it revert out of gas."""
        pairs = [[{"gas": _hex(1_000_000), **tx}, offset] for tx, offset in txs]
        self.rpc("anvil_reorg", [depth, pairs])

    def rollback(self, depth: int) -> None:
        """anvil_rollback: removes the newest ``depth`` blocks (the head number goes down)."""
        self.rpc("anvil_rollback", [depth])


def anvil_fixture(
    *,
    scope: Literal["function", "module", "session"] = "function",
    block_time_s: float | None = None,
    auto_mine: bool = True,
    extra_args: Sequence[str] = (),
) -> Any:
    """A pytest fixture yielding a started Anvil with these options, stopped afterwards.

    ``node = anvil_fixture()`` in a test module defines a fixture called ``node``.
    """

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[Anvil]:
        with Anvil(block_time_s=block_time_s, auto_mine=auto_mine, extra_args=extra_args) as node:
            yield node

    return fixture
