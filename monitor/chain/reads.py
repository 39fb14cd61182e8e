"""Live reads at one block: allowances, token balances, native balances, token metadata and
whether addresses hold code.

Through Multicall3's ``aggregate3`` (``allowFailure`` true, at its canonical address) when
the chain has it, several aggregates to one JSON-RPC batch; else JSON-RPC batches of plain
``eth_call`` (and ``eth_getBalance`` for native balances).

A call that reverts or answers anything but the documented shape makes its item unreadable
(None, with a reason), never an exception and never a number: a contract that emits fake
``Approval`` logs and has no ``allowance()`` reads as unreadable, and so does every call to a
"token" that answers a function no contract implements (a catch-all fallback answers anything).
Only a failure of the node itself (an :class:`~monitor.errors.UpstreamError` raised by the
client, or an error object that says the node cannot serve the block or the method) is raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from monitor.chain.abi import (
    DECIMALS,
    MULTICALL3_ADDRESS,
    NAME,
    NO_SUCH_FUNCTION,
    SYMBOL,
    TOTAL_SUPPLY,
    decode_aggregate3,
    decode_decimals,
    decode_text,
    decode_uint256,
    encode_aggregate3,
    encode_allowance,
    encode_balance_of,
    encode_get_eth_balance,
    hex_bytes,
    is_word,
)
from monitor.chain.rpc import hex_block
from monitor.errors import BadResponse, RpcError

REVERTED: Final = "reverted"
"""The call failed: it reverted, ran out of gas, or the node answered it with an error."""
MALFORMED: Final = "malformed"
"""The call answered, but not one 32-byte word (a uint256)."""
NOT_ERC20: Final = "not_erc20"
"""The contract answers ``totalSupply()`` with no uint256, or answers a function no contract
implements (a catch-all fallback): none of its answers mean anything."""

_T = TypeVar("_T")


class CallRpc(Protocol):
    """What the reader needs of :class:`monitor.chain.rpc.ChainRpc`."""

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any | RpcError]:
        """Results in call order; a call's JSON-RPC error object returned as ``RpcError``."""
        ...

    async def get_code(self, address: str, *, block: int | str = "latest") -> bytes:
        """``eth_getCode``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveReads:
    """What one :meth:`LiveReader.read` read, at ``block``. None is unreadable; the reason
    (:data:`REVERTED`, :data:`MALFORMED`, :data:`NOT_ERC20`) is in the matching ``*_errors``."""

    block: int
    allowances: dict[tuple[str, str, str], int | None]
    """(wallet, token, spender) -> ``allowance(wallet, spender)`` of ``token``."""
    balances: dict[tuple[str, str], int | None]
    """(wallet, token) -> ``balanceOf(wallet)`` of ``token``."""
    natives: dict[str, int | None]
    """wallet -> native balance in wei."""
    allowance_errors: dict[tuple[str, str, str], str]
    balance_errors: dict[tuple[str, str], str]
    native_errors: dict[str, str]

    @property
    def unreadable(self) -> int:
        """How many items could not be read."""
        return len(self.allowance_errors) + len(self.balance_errors) + len(self.native_errors)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenMetadata:
    """``symbol()``, ``name()`` and ``decimals()`` of a contract, None where unreadable.

    ``is_token`` is true when ``totalSupply()`` answers a uint256 and a function no contract
    implements does not (a catch-all fallback would answer anything with a word).
    """

    symbol: str | None
    name: str | None
    decimals: int | None
    is_token: bool


# Error objects that say the node cannot serve the request at all, whatever the contract: an
# unknown method, bad parameters, a pruned or unknown block, a rate limit. Raised, so that a
# poll fails as a whole rather than reading every item as unreadable.
_NODE_CODES: Final = frozenset({-32700, -32600, -32601, -32602, -32005, -32029, 429})
_NODE_TEXTS: Final = (
    "header not found",
    "missing trie node",
    "unknown block",
    "block not found",
    "historical state",
    "state is not available",
    "pruned",
    "rate limit",
    "too many requests",
    "capacity exceeded",
    "request timed out",
    "method not found",
    "does not exist/is not available",
)


def is_node_failure(error: RpcError) -> bool:
    """Whether ``error``, answering an ``eth_call``, is the node's failure rather than the
    called contract's: never for a revert (code 3, or a message naming one, whatever its
    text: a revert reason is the contract's to choose)."""
    message = error.rpc_message.lower()
    if error.code == 3 or "revert" in message:
        return False
    return error.code in _NODE_CODES or any(text in message for text in _NODE_TEXTS)


MAX_BATCH_BYTES: Final = 512 * 1024
"""The most a JSON-RPC batch of aggregates is let grow to, estimated from its calldata: under
every common body limit (aiohttp's 1 MiB, geth's 5 MB, providers' lower ones), which would
answer 413 and cost every call of the batch sent alone."""

# The JSON around one eth_call of an aggregate, beside its calldata's hex: the envelope
# (jsonrpc, id, method), the target, the block, quotes and separators; generous.
_CALL_ENVELOPE_BYTES: Final = 200


class LiveReader:
    """Reads ERC-20 state at a block, in bulk, tolerating contracts that are not tokens.

    ``calls_per_multicall`` calls go into one ``aggregate3``, and up to
    ``multicalls_per_batch`` aggregates into one JSON-RPC batch, as many as fit in
    ``max_batch_bytes`` of request body (one at least, however large); without Multicall3,
    ``calls_per_multicall`` plain calls make one batch. Batches run concurrently: the
    client's limiter paces them.

    The pairs read do not change from poll to poll, so neither does an aggregate's calldata:
    each is encoded once and kept while the reads use it (the calldata of the last read, and
    of the one before while the current one runs: bounded by what one read sends).
    """

    def __init__(
        self,
        rpc: CallRpc,
        *,
        calls_per_multicall: int = 1000,
        multicalls_per_batch: int = 10,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        if calls_per_multicall < 1 or multicalls_per_batch < 1 or max_batch_bytes < 1:
            raise ValueError(
                f"calls_per_multicall ({calls_per_multicall}), multicalls_per_batch "
                f"({multicalls_per_batch}) and max_batch_bytes ({max_batch_bytes}) must be "
                "at least 1"
            )
        self._rpc = rpc
        self._calls_per_multicall = calls_per_multicall
        self._multicalls_per_batch = multicalls_per_batch
        self._max_batch_bytes = max_batch_bytes
        self._multicall: bool | None = None
        self._calldata = _CalldataCache()

    async def multicall_available(self, *, block: int) -> bool:
        """Whether Multicall3 has code at its canonical address; asked once, at the first
        ``block`` read, and remembered for the life of the reader."""
        if self._multicall is None:
            self._multicall = bool(await self._rpc.get_code(MULTICALL3_ADDRESS, block=block))
        return self._multicall

    async def read(
        self,
        *,
        block: int,
        allowances: Sequence[tuple[str, str, str]],
        balances: Sequence[tuple[str, str]],
        natives: Sequence[str],
    ) -> LiveReads:
        """``allowance()`` of each (wallet, token, spender), ``balanceOf()`` of each
        (wallet, token) and the native balance of each wallet, all at ``block``."""
        allowance_keys = list(dict.fromkeys(allowances))
        balance_keys = list(dict.fromkeys(balances))
        native_keys = list(dict.fromkeys(natives))
        tokens = list(
            dict.fromkeys([t for _, t, _ in allowance_keys] + [t for _, t in balance_keys])
        )
        multicall = await self.multicall_available(block=block)
        self._calldata.next_read()

        calls: list[tuple[str, bytes]] = []
        for wallet, token, spender in allowance_keys:
            calls.append((token, encode_allowance(wallet, spender)))
        for wallet, token in balance_keys:
            calls.append((token, encode_balance_of(wallet)))
        for token in tokens:
            # The probe first: for a token it fails, and failures that end an aggregate
            # are read again (see _aggregates).
            calls.append((token, NO_SUCH_FUNCTION))
            calls.append((token, TOTAL_SUPPLY))
        if multicall:
            calls.extend((MULTICALL3_ADDRESS, encode_get_eth_balance(w)) for w in native_keys)
        answers = await self._call_all(calls, block=block, multicall=multicall)

        at = iter(answers)
        allowance_answers = [next(at) for _ in allowance_keys]
        balance_answers = [next(at) for _ in balance_keys]
        not_tokens = {token for token in tokens if not _is_token(next(at), next(at))}
        if multicall:
            native_answers: list[bytes | int | None] = list(at)
        else:
            native_answers = list(await self._balances(native_keys, block=block))

        allowance_values, allowance_errors = _words(
            allowance_keys, allowance_answers, lambda key: key[1] in not_tokens
        )
        balance_values, balance_errors = _words(
            balance_keys, balance_answers, lambda key: key[1] in not_tokens
        )
        native_values, native_errors = _words(native_keys, native_answers, lambda key: False)
        return LiveReads(
            block=block,
            allowances=allowance_values,
            balances=balance_values,
            natives=native_values,
            allowance_errors=allowance_errors,
            balance_errors=balance_errors,
            native_errors=native_errors,
        )

    async def token_metadata(
        self, tokens: Sequence[str], *, block: int
    ) -> dict[str, TokenMetadata]:
        """``symbol()``, ``name()``, ``decimals()`` of each token at ``block`` (a ``bytes32``
        symbol or name is read as text; a revert or garbage leaves the field None)."""
        keys = list(dict.fromkeys(tokens))
        functions = (NO_SUCH_FUNCTION, SYMBOL, NAME, DECIMALS, TOTAL_SUPPLY)
        calls = [(token, function) for token in keys for function in functions]
        multicall = await self.multicall_available(block=block)
        answers = iter(await self._call_all(calls, block=block, multicall=multicall))
        result: dict[str, TokenMetadata] = {}
        for token in keys:
            probe, symbol, name, decimals, total_supply = (next(answers) for _ in functions)
            result[token] = TokenMetadata(
                symbol=decode_text(symbol) if symbol is not None else None,
                name=decode_text(name) if name is not None else None,
                decimals=decode_decimals(decimals) if decimals is not None else None,
                is_token=_is_token(probe, total_supply),
            )
        return result

    async def has_code(self, addresses: Sequence[str], *, block: int) -> dict[str, bool]:
        """Whether each address holds contract code at ``block`` (an externally owned account
        has none). Every error here is the node's: raised."""
        keys = list(dict.fromkeys(addresses))
        requests = [("eth_getCode", [address, hex_block(block)]) for address in keys]
        answers = await _gather(
            self._rpc.batch(chunk) for chunk in _chunks(requests, self._calls_per_multicall)
        )
        result: dict[str, bool] = {}
        for address, answer in zip(keys, (a for chunk in answers for a in chunk), strict=True):
            if isinstance(answer, RpcError):
                raise answer
            code = hex_bytes(answer)
            if code is None:
                raise BadResponse(f"the code of {address} is no hex data", endpoint="eth_getCode")
            result[address] = bool(code)
        return result

    # -- the calls ---------------------------------------------------------------------------

    async def _call_all(
        self, calls: Sequence[tuple[str, bytes]], *, block: int, multicall: bool
    ) -> list[bytes | None]:
        """The return data of each (target, calldata) at ``block``, None where it failed."""
        if not multicall:
            return await self._plain(calls, block=block)
        chunks = [tuple(chunk) for chunk in _chunks(calls, self._calls_per_multicall)]
        groups = self._batch_groups(chunks)
        outcomes = await _gather(self._aggregates(group, block=block) for group in groups)
        answers: list[bytes | None] = []
        retry: list[int] = []
        for group_answers, group_retry in outcomes:
            retry.extend(len(answers) + i for i in group_retry)
            answers.extend(group_answers)
        if retry:
            again = await self._plain([calls[i] for i in retry], block=block)
            for i, answer in zip(retry, again, strict=True):
                answers[i] = answer
        return answers

    def _batch_groups(
        self, chunks: Sequence[tuple[tuple[str, bytes], ...]]
    ) -> list[Sequence[tuple[tuple[str, bytes], ...]]]:
        """``chunks`` (one aggregate each) in order, grouped into JSON-RPC batches of at most
        ``multicalls_per_batch`` aggregates and ``max_batch_bytes`` of estimated body."""
        groups: list[Sequence[tuple[tuple[str, bytes], ...]]] = []
        start = 0
        size = 0
        for index, chunk in enumerate(chunks):
            chunk_size = _aggregate_request_bytes(chunk)
            if index > start and (
                index - start >= self._multicalls_per_batch
                or size + chunk_size > self._max_batch_bytes
            ):
                groups.append(chunks[start:index])
                start, size = index, 0
            size += chunk_size
        if start < len(chunks):
            groups.append(chunks[start:])
        return groups

    async def _aggregates(
        self, chunks: Sequence[tuple[tuple[str, bytes], ...]], *, block: int
    ) -> tuple[list[bytes | None], list[int]]:
        """``chunks`` as one JSON-RPC batch of aggregates: the return data of each call (None
        where it failed) and the indexes of those to read again on their own.

        Encoding (the first time a chunk is seen) and decoding happen here, one batch at a
        time, so that the event loop runs between batches."""
        requests = [
            (
                "eth_call",
                [{"to": MULTICALL3_ADDRESS, "data": self._calldata.get(c)}, hex_block(block)],
            )
            for c in chunks
        ]
        outcomes = await self._rpc.batch(requests)
        answers: list[bytes | None] = []
        retry: list[int] = []
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            results = self._aggregate_results(outcome, len(chunk))
            if results is None:
                retry.extend(range(len(answers), len(answers) + len(chunk)))
                answers.extend([None] * len(chunk))
                continue
            # A call that burns all the gas it is given (old contracts' throw, an INVALID
            # opcode) leaves too little for the calls after it in the same aggregate, which
            # then fail for nothing: the failures that end a chunk get a second chance on
            # their own. Other failures are the contract's own; retrying them would cost a
            # call per unreadable item and poll.
            starved = len(results)
            while starved and not results[starved - 1][0]:
                starved -= 1
            retry.extend(range(len(answers) + starved, len(answers) + len(results)))
            answers.extend(data if success else None for success, data in results)
        return answers, retry

    def _aggregate_results(self, outcome: object, count: int) -> list[tuple[bool, bytes]] | None:
        if isinstance(outcome, RpcError):
            if is_node_failure(outcome):
                raise outcome
            return None
        data = hex_bytes(outcome)
        results = decode_aggregate3(data) if data is not None else None
        return results if results is not None and len(results) == count else None

    async def _plain(self, calls: Sequence[tuple[str, bytes]], *, block: int) -> list[bytes | None]:
        requests = [
            ("eth_call", [{"to": target, "data": _hex(data)}, hex_block(block)])
            for target, data in calls
        ]
        outcomes = await _gather(
            self._rpc.batch(chunk) for chunk in _chunks(requests, self._calls_per_multicall)
        )
        answers: list[bytes | None] = []
        for outcome in (o for chunk in outcomes for o in chunk):
            if isinstance(outcome, RpcError):
                if is_node_failure(outcome):
                    raise outcome
                answers.append(None)
            else:
                # An answer that is no hex data at all reads as malformed, like any garbage.
                data = hex_bytes(outcome)
                answers.append(data if data is not None else b"")
        return answers

    async def _balances(self, wallets: Sequence[str], *, block: int) -> list[int | bytes]:
        requests = [("eth_getBalance", [wallet, hex_block(block)]) for wallet in wallets]
        outcomes = await _gather(
            self._rpc.batch(chunk) for chunk in _chunks(requests, self._calls_per_multicall)
        )
        balances: list[int | bytes] = []
        for outcome in (o for chunk in outcomes for o in chunk):
            if isinstance(outcome, RpcError):
                raise outcome  # eth_getBalance cannot revert: an error is the node's
            balance = _quantity(outcome)
            balances.append(balance if balance is not None else b"")  # malformed
        return balances


def _is_token(probe: bytes | None, total_supply: bytes | None) -> bool:
    """A token answers ``totalSupply()`` with a word, and no function that does not exist."""
    return (
        total_supply is not None
        and is_word(total_supply)
        and not (probe is not None and is_word(probe))
    )


def _words(
    keys: Sequence[_T], answers: Sequence[bytes | int | None], not_token: Callable[[_T], bool]
) -> tuple[dict[_T, int | None], dict[_T, str]]:
    values: dict[_T, int | None] = {}
    errors: dict[_T, str] = {}
    for key, answer in zip(keys, answers, strict=True):
        if answer is None:
            values[key] = None
            errors[key] = REVERTED
            continue
        value = answer if isinstance(answer, int) else decode_uint256(answer)
        if value is None:
            values[key] = None
            errors[key] = MALFORMED
        elif not_token(key):
            values[key] = None
            errors[key] = NOT_ERC20
        else:
            values[key] = value
    return values, errors


def _quantity(value: object) -> int | None:
    if not isinstance(value, str) or not value.startswith("0x") or not 2 < len(value) <= 66:
        return None
    try:
        return int(value[2:], 16)
    except ValueError:
        return None


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _aggregate_request_bytes(calls: Sequence[tuple[str, bytes]]) -> int:
    """The JSON size of an ``eth_call`` of ``aggregate3`` over ``calls``, without encoding it:
    selector, array offset and length, then per call its offset, target, flag, data offset,
    data length and data padded to words; twice that in hex, plus the envelope."""
    words = 2 + sum(5 + (len(data) + 31) // 32 for _, data in calls)
    return 2 * (4 + 32 * words) + _CALL_ENVELOPE_BYTES


class _CalldataCache:
    """The ``aggregate3`` calldata (hex) of each chunk of calls, encoded once while reads use
    it. What the previous read used is kept through the current one, and what the current
    one does not use again is dropped when the next begins: memory stays about one read's
    calldata, however the pairs change."""

    def __init__(self) -> None:
        self._current: dict[tuple[tuple[str, bytes], ...], str] = {}
        self._previous: dict[tuple[tuple[str, bytes], ...], str] = {}

    def next_read(self) -> None:
        """A read begins: only what the last one used is kept for it."""
        self._previous = self._current
        self._current = {}

    def get(self, calls: tuple[tuple[str, bytes], ...]) -> str:
        data = self._current.get(calls)
        if data is None:
            data = self._previous.pop(calls, None)
            if data is None:
                data = _hex(encode_aggregate3(calls))
            self._current[calls] = data
        return data


def _chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    return (items[start : start + size] for start in range(0, len(items), size))


async def _gather(awaitables: Iterable[Awaitable[_T]]) -> list[_T]:
    """The results of ``awaitables``, run concurrently; the first error raised after all end
    (none is left running behind the caller's back)."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
