"""1inch's Web3 RPC API: ``POST /web3/{chain}`` and ``/web3/{chain}/{full|archive}``.

A JSON-RPC 2.0 node for the scenario's chains (docs/simulator.md, "Web3 RPC API"), answering
from the same ledger as the Balance API, laid out in blocks by ``chain_state.ChainHistory``:
``eth_chainId``, ``net_version``, ``eth_blockNumber`` (which moves the chain one step on),
``eth_getLogs`` (the scenario's ERC-20 ``Approval`` logs), ``eth_call`` of the ERC-20 views
and of Multicall3 (``aggregate3``, ``getEthBalance``, ``getBlockNumber``,
``getCurrentBlockTimestamp``), ``eth_getBalance``, ``eth_getCode``, ``eth_getBlockByNumber``,
and batch arrays. The API key, the rate limit and faults are the middleware's and
``answers.respond``'s, as for every 1inch route (fault endpoint ``web3``, or ``any``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web
from eth_abi.abi import decode, encode

from monitor.chain.abi import (
    AGGREGATE3,
    ALLOWANCE,
    APPROVAL_TOPIC0,
    BALANCE_OF,
    DECIMALS,
    GET_ETH_BALANCE,
    MULTICALL3_ADDRESS,
    NAME,
    SYMBOL,
    TOTAL_SUPPLY,
    selector,
)
from monitor.domain.model import UINT256_MAX
from monitor.simulator.answers import ApiError, request_elapsed_s, respond
from monitor.simulator.chain_state import ApprovalRecord, ChainHistory
from monitor.simulator.faults import FaultTarget
from monitor.simulator.model import TokenSpec
from monitor.simulator.state import REQUEST_ID, STATE, SimulatorState

NODE_TYPES: Final = ("full", "archive")
GET_BLOCK_NUMBER: Final = selector("getBlockNumber()")
GET_CURRENT_BLOCK_TIMESTAMP: Final = selector("getCurrentBlockTimestamp()")
ERROR_STRING: Final = selector("Error(string)")
SAFE_DEPTH: Final = 32
FINALIZED_DEPTH: Final = 64
_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_TOPIC = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS_TOPIC = re.compile(r"0x0{24}([0-9a-fA-F]{40})")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


class RpcFailure(Exception):
    """A JSON-RPC error object for one call."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class Web3World:
    """The chains of the Web3 RPC API, each built on first use (a generated world's history
    costs a pass over its positions)."""

    def __init__(self, state: SimulatorState, anchor_unix: float) -> None:
        self._state = state
        self._anchor_unix = anchor_unix
        self._chains: dict[int, ChainHistory] = {}

    def heads(self) -> list[dict[str, int]]:
        """Each chain built so far: its step and head block, as JSON."""
        return [
            {"chain": chain_id, "step": h.step, "head": h.head()}
            for chain_id, h in sorted(self._chains.items())
        ]

    def history(self, chain_id: int) -> ChainHistory | None:
        """The chain ``chain_id``, None when the scenario does not have it."""
        history = self._chains.get(chain_id)
        if history is None:
            chain = self._state.scenario.chain(chain_id)
            if chain is None:
                return None
            history = self._chains[chain_id] = ChainHistory(
                scenario=self._state.scenario,
                chain=chain,
                ledger=self._state.ledger,
                anchor_unix=self._anchor_unix,
            )
        return history


WEB3 = web.AppKey("simulator_web3", Web3World)
"""Where ``add_web3_routes`` keeps the ``Web3World``."""


def add_web3_routes(app: web.Application, *, anchor_unix: float) -> None:
    """Register the Web3 RPC API on ``app`` (after ``app[STATE]`` is set); ``anchor_unix``
    is the wall-clock time of the simulator's start (step 1's head)."""
    app[WEB3] = Web3World(app[STATE], anchor_unix)
    app.router.add_post("/web3/{chain}", web3_rpc)
    app.router.add_post("/web3/{chain}/{node_type}", web3_rpc)


async def web3_rpc(request: web.Request) -> web.StreamResponse:
    """One JSON-RPC request or batch array."""
    node_type = request.match_info.get("node_type")
    if node_type is not None and node_type not in NODE_TYPES:
        raise ApiError(f"Cannot POST {request.path}", status=404)
    text = request.match_info["chain"]
    history = request.app[WEB3].history(int(text)) if text.isascii() and text.isdigit() else None
    if history is None:
        raise ApiError(f"chain {text!r} is not served", status=404, meta=[("chain", text)])
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return _plain(request, _error(None, RpcFailure(-32700, "parse error")), status=400)
    state = request.app[STATE]
    elapsed_s = request_elapsed_s(request)
    steps: list[int] = []
    payload: object
    if isinstance(body, list):
        if not body:
            payload = _error(None, RpcFailure(-32600, "empty batch"))
        elif not state.scenario.web3.batches:
            payload = _error(None, RpcFailure(-32600, "batch requests are not supported"))
        else:
            payload = [_one(history, item, steps) for item in body]
    else:
        payload = _one(history, body, steps)
    target = FaultTarget(endpoint="web3", chain_id=history.chain_id, polls={}, default_poll=1)
    on_served: Callable[[], None] | None = None
    if steps:

        def on_served() -> None:
            history.served(max(steps), elapsed_s)

    return await respond(request, target, payload, on_served)


def _plain(request: web.Request, payload: object, *, status: int) -> web.Response:
    return web.json_response(payload, status=status, headers={"X-Request-Id": request[REQUEST_ID]})


def _error(request_id: object, failure: RpcFailure) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "error": failure.to_json()}


def _one(history: ChainHistory, item: object, steps: list[int]) -> dict[str, object]:
    if not isinstance(item, dict):
        return _error(None, RpcFailure(-32600, "invalid request"))
    request_id = item.get("id")
    method = item.get("method")
    params = item.get("params", [])
    if item.get("jsonrpc") != "2.0" or not isinstance(method, str):
        return _error(request_id, RpcFailure(-32600, "invalid request"))
    if not isinstance(params, list):
        return _error(request_id, RpcFailure(-32602, "invalid argument: params must be an array"))
    handler = _METHODS.get(method)
    if handler is None:
        failure = RpcFailure(-32601, f"the method {method} does not exist/is not available")
        return _error(request_id, failure)
    try:
        if method == "eth_blockNumber":
            step = history.next_step()
            steps.append(step)
            result: object = hex(history.head_of(step))
        else:
            result = handler(history, params)
    except RpcFailure as failure:
        return _error(request_id, failure)
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


# --- parameters ----------------------------------------------------------------------------


def _param(params: list[Any], index: int, default: object = None) -> Any:
    return params[index] if index < len(params) else default


def _invalid(what: str) -> RpcFailure:
    return RpcFailure(-32602, f"invalid argument: {what}")


def _quantity(value: object, what: str) -> int:
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise _invalid(f"{what}: hex quantity expected, got {value!r:.60}")
    return int(value, 16)


def _tagged_block(history: ChainHistory, value: object, what: str) -> int:
    """A block parameter as a number, not checked against the head."""
    if isinstance(value, dict) and "blockNumber" in value:  # EIP-1898
        value = value["blockNumber"]
    head = history.head()
    if value is None or value in ("latest", "pending"):
        return head
    if value == "safe":
        return max(head - SAFE_DEPTH, 0)
    if value == "finalized":
        return max(head - FINALIZED_DEPTH, 0)
    if value == "earliest":
        return 0
    return _quantity(value, what)


def _block(history: ChainHistory, value: object) -> int:
    """A block parameter of a state read: at most the head."""
    block = _tagged_block(history, value, "block")
    if block > history.head():
        raise RpcFailure(-32000, "header not found")
    return block


def _address(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise _invalid(f"{what}: address expected, got {value!r:.60}")
    return value.lower()


# --- methods -------------------------------------------------------------------------------


def _chain_id(history: ChainHistory, params: list[Any]) -> object:
    return hex(history.chain_id)


def _net_version(history: ChainHistory, params: list[Any]) -> object:
    return str(history.chain_id)


def _get_balance(history: ChainHistory, params: list[Any]) -> object:
    owner = _address(_param(params, 0), "address")
    return hex(history.native_balance(owner, _block(history, _param(params, 1))))


def _get_code(history: ChainHistory, params: list[Any]) -> object:
    address = _address(_param(params, 0), "address")
    _block(history, _param(params, 1))
    return "0x" + (history.code(address).hex() if history.has_code(address) else "")


def _get_block(history: ChainHistory, params: list[Any]) -> object:
    number = _tagged_block(history, _param(params, 0), "block")
    if number > history.head():
        return None
    return {
        "number": hex(number),
        "hash": history.block_hash(number),
        "parentHash": history.block_hash(number - 1) if number else "0x" + "00" * 32,
        "timestamp": hex(history.timestamp(number)),
        "miner": "0x" + "00" * 20,
        "gasLimit": hex(30_000_000),
        "gasUsed": "0x0",
        "baseFeePerGas": hex(1_000_000_000),
        "difficulty": "0x0",
        "extraData": "0x",
        "nonce": "0x0000000000000000",
        "logsBloom": "0x" + "00" * 256,
        "transactions": [],
        "uncles": [],
    }


def _get_logs(history: ChainHistory, params: list[Any]) -> object:
    query = _param(params, 0)
    if not isinstance(query, dict):
        raise _invalid("filter object expected")
    if "blockHash" in query:
        raise _invalid("blockHash filters are not supported by the simulator")
    head = history.head()
    from_block = _tagged_block(history, query.get("fromBlock"), "fromBlock")
    to_block = min(_tagged_block(history, query.get("toBlock"), "toBlock"), head)
    if from_block > head:
        return []
    if from_block > to_block:
        raise _invalid("invalid block range params")
    spec = history.spec
    largest = spec.max_block_range
    if largest is not None and to_block - from_block + 1 > largest:
        raise RpcFailure(-32602, alchemy_range_text(largest, from_block))
    addresses = _address_filter(query.get("address"))
    topics = query.get("topics") or []
    if not isinstance(topics, list) or len(topics) > 4:
        raise _invalid("topics: an array of at most 4 entries expected")
    if len(topics) > 3:
        return []  # ERC-20 Approval logs have three topics
    wanted = [_topic_filter(t, f"topics[{i}]") for i, t in enumerate(topics)]
    wanted += [None] * (3 - len(wanted))
    if wanted[0] is not None and APPROVAL_TOPIC0 not in wanted[0]:
        return []
    records = history.logs(
        from_block=from_block,
        to_block=to_block,
        addresses=addresses,
        owners=_topic_addresses(wanted[1]),
        spenders=_topic_addresses(wanted[2]),
    )
    if spec.max_logs is not None and len(records) > spec.max_logs:
        raise RpcFailure(
            -32005,
            f"query returned more than {spec.max_logs} results. Try with this block range "
            f"[{hex(from_block)}, {hex(records[spec.max_logs - 1].block)}].",
        )
    return [_log_json(history, r) for r in records]


def alchemy_range_text(largest: int, from_block: int) -> str:
    """Alchemy's refusal of an ``eth_getLogs`` range over ``largest`` blocks."""
    size = f"{largest // 1000}K" if largest % 1000 == 0 else f"{largest:,}"
    return (
        "Log response size exceeded. You can make eth_getLogs requests with up to a "
        f"{size} block range and no limit on the response size, or you can request any block "
        "range with a cap of 10K logs in the response. Based on your parameters, this block "
        f"range should work: [{hex(from_block)}, {hex(from_block + largest - 1)}]"
    )


def _address_filter(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset({_address(value, "address")})
    if isinstance(value, list):
        if not value:
            return None
        return frozenset(_address(v, "address") for v in value)
    raise _invalid("address: an address or an array of addresses expected")


def _topic_filter(value: object, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items:
        return None
    topics: set[str] = set()
    for item in items:
        if item is None:
            return None
        if not isinstance(item, str) or not _TOPIC.fullmatch(item):
            raise _invalid(f"{what}: 32-byte hex topics expected, got {item!r:.70}")
        topics.add(item.lower())
    return frozenset(topics)


def _topic_addresses(topics: frozenset[str] | None) -> frozenset[str] | None:
    if topics is None:
        return None
    found = (_ADDRESS_TOPIC.fullmatch(t) for t in topics)
    return frozenset("0x" + m.group(1) for m in found if m is not None)


def _log_json(history: ChainHistory, record: ApprovalRecord) -> dict[str, object]:
    return {
        "address": record.token,
        "topics": [
            APPROVAL_TOPIC0,
            "0x" + "00" * 12 + record.owner[2:],
            "0x" + "00" * 12 + record.spender[2:],
        ],
        "data": "0x" + record.value.to_bytes(32).hex(),
        "blockNumber": hex(record.block),
        "blockHash": history.block_hash(record.block),
        "transactionHash": history.transaction_hash(record),
        "transactionIndex": hex(record.index),
        "logIndex": hex(record.index),
        "removed": False,
    }


# --- eth_call ------------------------------------------------------------------------------


def _call(history: ChainHistory, params: list[Any]) -> object:
    call = _param(params, 0)
    if not isinstance(call, dict):
        raise _invalid("call object expected")
    to = _address(call.get("to"), "to")
    data_text = call.get("input", call.get("data", "0x"))
    if not isinstance(data_text, str) or not _DATA.fullmatch(data_text):
        raise _invalid("data: hex data expected")
    block = _block(history, _param(params, 1))
    success, output = execute(history, to, bytes.fromhex(data_text[2:]), block)
    if not success:
        if output:
            raise RpcFailure(3, "execution reverted", "0x" + output.hex())
        raise RpcFailure(-32000, "execution reverted")
    return "0x" + output.hex()


def execute(history: ChainHistory, to: str, data: bytes, block: int) -> tuple[bool, bytes]:
    """Run a call to ``to`` at ``block``: (success, return data). An account with no code
    answers every call with success and no data, as the EVM does; a contract reverts any
    function it does not have."""
    if not history.has_code(to):
        return True, b""
    try:
        if to == MULTICALL3_ADDRESS:
            return _multicall(history, data, block)
        token = history.token(to)
        if token is not None:
            return _erc20(history, token, data, block)
    except Exception:  # eth-abi's several kinds of decoding failure: the contract reverts
        return False, b""
    return False, b""


def _word(value: int) -> tuple[bool, bytes]:
    return True, encode(("uint256",), (value,))


def _erc20(history: ChainHistory, token: TokenSpec, data: bytes, block: int) -> tuple[bool, bytes]:
    function, arguments = data[:4], data[4:]
    if function == ALLOWANCE:
        owner, spender = decode(("address", "address"), arguments)
        return _word(history.allowance(token.address, owner.lower(), spender.lower(), block))
    if function == BALANCE_OF:
        (owner,) = decode(("address",), arguments)
        return _word(history.balance(token, owner.lower(), block))
    if function == DECIMALS:
        return _word(token.decimals)
    if function == SYMBOL:
        return True, encode(("string",), (token.symbol,))
    if function == NAME:
        return True, encode(("string",), (token.name,))
    if function == TOTAL_SUPPLY:
        return _word(min(10 ** (token.decimals + 12), UINT256_MAX))
    return False, b""


def _multicall(history: ChainHistory, data: bytes, block: int) -> tuple[bool, bytes]:
    function, arguments = data[:4], data[4:]
    if function == AGGREGATE3:
        (calls,) = decode(("(address,bool,bytes)[]",), arguments)
        results: list[tuple[bool, bytes]] = []
        for target, allow_failure, calldata in calls:
            success, output = execute(history, target.lower(), bytes(calldata), block)
            if not success and not allow_failure:
                return False, ERROR_STRING + encode(("string",), ("Multicall3: call failed",))
            results.append((success, output))
        return True, encode(("(bool,bytes)[]",), (results,))
    if function == GET_ETH_BALANCE:
        (owner,) = decode(("address",), arguments)
        return _word(history.native_balance(owner.lower(), block))
    if function == GET_BLOCK_NUMBER:
        return _word(block)
    if function == GET_CURRENT_BLOCK_TIMESTAMP:
        return _word(history.timestamp(block))
    return False, b""


_Method = Callable[[ChainHistory, list[Any]], object]
_METHODS: Mapping[str, _Method] = {
    "eth_chainId": _chain_id,
    "net_version": _net_version,
    "eth_blockNumber": _chain_id,  # answered by _one: it moves the chain on
    "eth_getBalance": _get_balance,
    "eth_getCode": _get_code,
    "eth_getBlockByNumber": _get_block,
    "eth_getLogs": _get_logs,
    "eth_call": _call,
}
