"""Async JSON-RPC 2.0 client for an EVM node: ``ChainRpc``, over the one aiohttp session.

The discipline is the 1inch client's (``monitor.oneinch.client``): every HTTP attempt, retries
included, passes the ``RateLimiter`` it is given (the 1inch Web3 RPC API shares the key's
limiter with the Balance API); 429, 5xx, timeouts and connection failures are retried with
bounded exponential backoff (``RetryPolicy``), a ``Retry-After`` pauses the limiter, a
``HostBreaker`` fails requests at once while the host keeps refusing connections; other 4xx
are ``Rejected`` at once, an answer that is not a JSON-RPC response is ``BadResponse``.

A JSON-RPC error object is the node's answer for one call (a revert, a refused log range):
``request`` raises it as ``RpcError``, ``batch`` returns it in the call's place. Batch arrays
are split into ``max_batch_size`` calls; a provider that refuses arrays (a 4xx, a non-array
answer, one error object for the whole array) is sent single calls from then on. An array
answered 413 (payload too large) is split in halves and each half sent again, down to single
calls; the largest array that then passed (in bytes) is remembered, and later arrays are cut
to it up front.

An RPC URL often holds a provider key in its path, query or userinfo, and a header may hold
a bearer key: nothing here prints more than ``scheme://host[:port]`` (``RpcEndpoint.display``),
and every text a provider sends is scrubbed of the URL and its parts before it goes into an
exception or a log line.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aiohttp
import orjson
import yarl

from monitor.errors import BadResponse, RateLimited, Rejected, RpcError, Unavailable, UpstreamError
from monitor.oneinch.breaker import HostBreaker, connection_failure_cause
from monitor.oneinch.client import (
    RETRY_AFTER_CEILING_S,
    RequestRecord,
    RetryPolicy,
    _retry_after_s,
)
from monitor.oneinch.parse import NotJson, parse_body
from monitor.oneinch.ratelimit import PausedTooLong, RateLimiter

log = logging.getLogger(__name__)

BLOCK_TAGS: Final = frozenset({"latest", "earliest", "pending", "safe", "finalized"})
"""The block tags a read may name instead of a number."""

MAX_QUANTITY_DIGITS: Final = 64
"""Hex digits of the largest quantity (2**256 - 1); a longer one is garbage."""

_MIN_SECRET_LENGTH = 6
"""Parts of a URL shorter than this (``v3``, ``eth``) are not keys, and scrubbing them from a
provider's text would only garble it. The whole URL, path and query are scrubbed whatever
their length."""

_DETAIL_MAX_CHARS = 300
_JSON_RPC_ERROR_STATUSES = frozenset({400, 404, 405, 413, 422})
"""4xx statuses a provider may give to JSON-RPC error objects (Alchemy answers a refused log
range with 400 and a JSON-RPC error): such a body is the calls' answer, not a refusal."""
_BATCH_REFUSAL_STATUSES = frozenset({400, 404, 405, 406, 415, 422})
"""Statuses that, answering an array, mean "no batches here": 401, 403 (the key) and 429 (the
rate) would answer a single call alike, so they are not taken for a refusal; 413 means "too
large", not "no arrays" (``_TOO_LARGE``)."""
_TOO_LARGE = 413
"""Payload too large: an array so answered is split in halves and sent again."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RpcEndpoint:
    """Where a chain's JSON-RPC node is, and where that setting came from.

    ``url`` and ``headers`` may hold a provider key: neither is ever printed. ``repr`` and
    ``str`` show ``display`` (``scheme://host[:port]``) only.
    """

    chain_id: int
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    origin: str
    """``chains[0].rpc.url``, ``environment variable EXPOSURE_MONITOR_RPC_URL_1``,
    ``credential rpc_url_1``, ``1inch Web3 RPC API``."""

    @property
    def display(self) -> str:
        """``scheme://host[:port]`` of ``url``: the only part of it ever shown."""
        return display_url(self.url)

    def __repr__(self) -> str:
        return f"RpcEndpoint(chain_id={self.chain_id}, {self.display}, origin={self.origin!r})"

    def __str__(self) -> str:
        return self.display


def display_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (the port only when the URL spells it out)."""
    try:
        parsed = yarl.URL(url)
    except (TypeError, ValueError):
        return "<invalid URL>"
    host = (parsed.raw_host or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parsed.explicit_port
    return f"{parsed.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def hex_block(number: int) -> str:
    """A block number as a JSON-RPC quantity (``0x1b4``)."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(f"a block number must be a non-negative int, got {number!r}")
    return hex(number)


def block_param(block: int | str) -> str:
    """``block`` (a number or a tag such as ``latest``) as a JSON-RPC block parameter."""
    if isinstance(block, str):
        if block in BLOCK_TAGS:
            return block
        raise ValueError(f"unknown block tag {block!r} (one of {', '.join(sorted(BLOCK_TAGS))})")
    return hex_block(block)


_QUANTITY = re.compile(r"0x[0-9a-fA-F]+")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


def decode_quantity(value: object) -> int:
    """A JSON-RPC quantity (``"0x1b4"``) as an exact ``int``; ``ValueError`` for anything else
    (no prefix, no digits, signs, underscores, spaces, numbers, more than 256 bits)."""
    if not isinstance(value, str) or _QUANTITY.fullmatch(value) is None:
        raise ValueError(f"not a hex quantity: {_snippet(value)}")
    if len(value[2:].lstrip("0")) > MAX_QUANTITY_DIGITS:
        raise ValueError(f"hex quantity over 256 bits ({len(value) - 2} digits)")
    return int(value[2:], 16)


def decode_data(value: object) -> bytes:
    """JSON-RPC data (``"0x"`` and whole bytes in hex) as ``bytes``; ``ValueError`` otherwise."""
    if not isinstance(value, str) or _DATA.fullmatch(value) is None:
        raise ValueError(f"not hex data: {_snippet(value)}")
    return bytes.fromhex(value[2:])


def _snippet(value: object) -> str:
    """A node's value for an error message: its repr, 40 characters at most."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    payload: bytes
    refused: bool = False
    too_large: bool = False


@dataclass(frozen=True, slots=True)
class _Call:
    """One call with its id, encoded once: sent alone or as an element of an array."""

    request_id: int
    method: str
    body: bytes


class _ConnectionFailed(Exception):
    """An attempt that never reached the host (refused, DNS): the breaker counts these."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(cause)


class _BatchRefused(Exception):
    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(why)


class _BatchTooLarge(Exception):
    """The provider answered an array with 413: a smaller one may pass."""


class ChainRpc:
    """JSON-RPC 2.0 over HTTP POST to one endpoint. It never closes ``session``.

    ``requests_sent`` counts HTTP requests (retries included; a batch array counts once).
    ``batches_supported`` is None until the first batch array, True once one was answered,
    False for good once the provider refused one (it never turns back: arrays in flight at
    once cannot undo a refusal). ``batch_bytes_limit`` is None until an array is answered 413,
    then the size of the largest array sent since that passed. ``breaker`` defaults to one of
    its own for the endpoint's host; ``on_request`` hears of every HTTP attempt, as the 1inch
    client's does.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: RpcEndpoint,
        *,
        limiter: RateLimiter,
        max_attempts: int = 5,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        timeout_s: float = 30.0,
        max_batch_size: int = 100,
        retry_after_max_s: float = 300.0,
        breaker: HostBreaker | None = None,
        on_request: Callable[[RequestRecord], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.endpoint = endpoint
        self.requests_sent = 0
        self.batches_supported: bool | None = None
        self._session = session
        self._display = endpoint.display
        self._limiter = limiter
        self._retry = RetryPolicy(
            max_attempts=max_attempts,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            retry_after_max_s=retry_after_max_s,
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_batch_size = max_batch_size
        self._too_large_bytes: int | None = None
        self._fitting_bytes: int | None = None
        self._breaker = breaker or HostBreaker(self._display)
        self._on_request = on_request
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **endpoint.headers,
        }
        self._ids = itertools.count(1)
        self._secrets = _secret_pattern(endpoint)

    def __repr__(self) -> str:
        return f"ChainRpc({self.endpoint!r})"

    # -- JSON-RPC ----------------------------------------------------------------------------

    async def request(self, method: str, params: list[Any]) -> Any:
        """The ``result`` of one call; a JSON-RPC error object is raised as ``RpcError``."""
        (outcome,) = await self._unthrottled([(method, params)])
        if isinstance(outcome, RpcError):
            raise outcome
        return outcome

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any | RpcError]:
        """The results of ``calls``, in their order; a call's JSON-RPC error object is returned
        in its place as ``RpcError``, not raised. Sent as arrays of ``max_batch_size`` calls,
        or one by one where the provider refuses arrays."""
        return await self._unthrottled(calls)

    async def _unthrottled(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any | RpcError]:
        """``_send``, with the calls a provider throttled through a JSON-RPC error (inside an
        answer of status 200, as some do per call in a batch) sent again after a backoff,
        like a 429; ``RateLimited`` when some still are after ``max_attempts``. Such an error
        is the provider's limit, not the call's answer: never returned as one."""
        results = await self._send(calls)
        for attempt in range(1, self._retry.max_attempts + 1):
            throttled = [i for i, r in enumerate(results) if _is_throttled(r)]
            if not throttled:
                return results
            first: RpcError = results[throttled[0]]
            if attempt == self._retry.max_attempts:
                error = RateLimited(
                    f"rate limited: {first.rpc_message} ({self._display})",
                    endpoint=first.endpoint,
                    attempts=attempt,
                )
                log.warning("JSON-RPC request failed: %s", error)
                raise error
            delay = self._retry.backoff_s(attempt, self._rng)
            log.info(
                "%d of %d JSON-RPC calls throttled by %s (%s), retrying in %.1fs",
                len(throttled),
                len(calls),
                self._display,
                first.rpc_message,
                delay,
            )
            await self._sleep(delay)
            again = await self._send([calls[i] for i in throttled])
            for i, result in zip(throttled, again, strict=True):
                results[i] = result
        return results

    async def _send(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any | RpcError]:
        if len(calls) <= 1 or self.batches_supported is False:
            return [await self._single(method, params) for method, params in calls]
        return await self._send_packed([self._encode(method, params) for method, params in calls])

    async def _send_packed(self, encoded: Sequence[_Call]) -> list[Any | RpcError]:
        """``encoded`` in arrays cut to ``max_batch_size`` and ``batch_bytes_limit`` (as it
        stands when each array is cut: it may drop on the way)."""
        results: list[Any | RpcError] = []
        start = 0
        while start < len(encoded):
            group = self._next_group(encoded, start)
            results.extend(await self._send_group(group))
            start += len(group)
        return results

    @property
    def batch_bytes_limit(self) -> int | None:
        """The largest array, in bytes of its body, that later arrays are cut to: None until
        the provider answered an array with 413 (payload too large); then the largest array
        answered since, below the smallest refused (one byte under it until one passed)."""
        if self._too_large_bytes is None:
            return None
        if self._fitting_bytes is not None:
            return self._fitting_bytes
        return self._too_large_bytes - 1

    def _next_group(self, encoded: Sequence[_Call], start: int) -> list[_Call]:
        """The calls from ``start`` for the next array: at most ``max_batch_size``, and within
        ``batch_bytes_limit`` (at least one call, however large)."""
        limit = self.batch_bytes_limit
        group = [encoded[start]]
        size = 2 + len(encoded[start].body)  # the brackets, then a comma before each next
        for call in encoded[start + 1 : start + self._max_batch_size]:
            size += 1 + len(call.body)
            if limit is not None and size > limit:
                break
            group.append(call)
        return group

    async def _send_group(self, group: Sequence[_Call]) -> list[Any | RpcError]:
        """``group`` as one array; if the provider finds it too large, its two halves (each
        cut to the limit learned meanwhile, and halved again if need be, down to single
        calls); one by one if the provider refuses arrays."""
        if len(group) > 1 and self.batches_supported is not False:
            try:
                return await self._array(group)
            except _BatchTooLarge:
                half = (len(group) + 1) // 2
                return [
                    *await self._send_packed(group[:half]),
                    *await self._send_packed(group[half:]),
                ]
            except _BatchRefused as refusal:
                self._batches_refused(refusal.why)
        return [await self._single_call(call) for call in group]

    # -- typed calls -------------------------------------------------------------------------

    async def chain_id(self) -> int:
        """``eth_chainId``."""
        return self.quantity("eth_chainId", await self.request("eth_chainId", []))

    async def block_number(self) -> int:
        """``eth_blockNumber``: the head."""
        return self.quantity("eth_blockNumber", await self.request("eth_blockNumber", []))

    async def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        topics: Sequence[str | Sequence[str] | None],
        address: str | Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """``eth_getLogs`` over ``[from_block, to_block]``: the raw log objects. A provider
        refusing the range or the result size answers with an ``RpcError``."""
        query: dict[str, Any] = {
            "fromBlock": hex_block(from_block),
            "toBlock": hex_block(to_block),
            "topics": [t if t is None or isinstance(t, str) else list(t) for t in topics],
        }
        if address is not None:
            query["address"] = address if isinstance(address, str) else list(address)
        result = await self.request("eth_getLogs", [query])
        if not isinstance(result, list) or not all(isinstance(item, dict) for item in result):
            raise self.bad_response("eth_getLogs", "the result is not a list of log objects")
        return result

    async def call(self, to: str, data: bytes, *, block: int | str = "latest") -> bytes:
        """``eth_call``: the return data; a revert is raised as ``RpcError``."""
        params = [{"to": to, "data": "0x" + data.hex()}, block_param(block)]
        return self.data("eth_call", await self.request("eth_call", params))

    async def get_code(self, address: str, *, block: int | str = "latest") -> bytes:
        """``eth_getCode``: empty for an account with no code."""
        result = await self.request("eth_getCode", [address, block_param(block)])
        return self.data("eth_getCode", result)

    async def get_balance(self, address: str, *, block: int | str = "latest") -> int:
        """``eth_getBalance``: wei."""
        result = await self.request("eth_getBalance", [address, block_param(block)])
        return self.quantity("eth_getBalance", result)

    async def get_block(self, number: int) -> dict[str, Any]:
        """``eth_getBlockByNumber`` without transactions."""
        result = await self.request("eth_getBlockByNumber", [hex_block(number), False])
        if result is None:
            raise self.bad_response("eth_getBlockByNumber", f"no block {number} (null)")
        if not isinstance(result, dict):
            raise self.bad_response("eth_getBlockByNumber", "the result is not a block object")
        return result

    async def block_timestamp(self, number: int) -> int:
        """The timestamp of block ``number``, unix seconds."""
        block = await self.get_block(number)
        return self.quantity("eth_getBlockByNumber", block.get("timestamp"), what="timestamp")

    # -- decoding results (public: a batch's results are decoded by the caller) -------------

    def quantity(self, method: str, value: object, *, what: str = "result") -> int:
        """``value`` as a quantity, or ``BadResponse`` naming ``method``."""
        try:
            return decode_quantity(value)
        except ValueError as exc:
            raise self.bad_response(method, f"{what}: {exc}") from None

    def data(self, method: str, value: object, *, what: str = "result") -> bytes:
        """``value`` as hex data, or ``BadResponse`` naming ``method``."""
        try:
            return decode_data(value)
        except ValueError as exc:
            raise self.bad_response(method, f"{what}: {exc}") from None

    def bad_response(self, method: str, problem: str, *, status: int | None = 200) -> BadResponse:
        """A ``BadResponse`` for ``method``, its text scrubbed of the URL and named by host."""
        return BadResponse(
            f"{self._scrub(problem)} ({self._display})", endpoint=method, status=status
        )

    # -- calls and arrays --------------------------------------------------------------------

    def _encode(self, method: str, params: list[Any]) -> _Call:
        request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        return _Call(request_id, method, orjson.dumps(body))

    async def _single(self, method: str, params: list[Any]) -> Any | RpcError:
        return await self._single_call(self._encode(method, params))

    async def _single_call(self, call: _Call) -> Any | RpcError:
        method = call.method
        answer = await self._post(method, call.body, array=False)
        data = self._decoded(method, answer)
        if not isinstance(data, dict):
            raise self.bad_response(method, "the answer is not a JSON-RPC response object")
        return self._outcome(method, data, call.request_id)

    async def _array(self, chunk: Sequence[_Call]) -> list[Any | RpcError]:
        ids = [call.request_id for call in chunk]
        body = b"[" + b",".join(call.body for call in chunk) + b"]"
        methods = {call.method for call in chunk}
        label = methods.pop() if len(methods) == 1 else "batch"
        answer = await self._post(label, body, array=True)
        if answer.too_large:
            self._refused_as_too_large(len(chunk), len(body))
            raise _BatchTooLarge
        if answer.refused:
            raise _BatchRefused(f"HTTP {answer.status}")
        data = self._decoded(label, answer)
        if isinstance(data, dict):
            raise _BatchRefused("one object answered an array")
        if not isinstance(data, list):
            raise self.bad_response(label, "the answer is not JSON-RPC")
        if data and all(_is_anonymous_error(item) for item in data):
            raise _BatchRefused("errors with no id answered the array")
        expected = set(ids)
        by_id: dict[int, dict[str, Any]] = {}
        for item in data:
            item_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(item, dict) or not _is_int(item_id) or item_id not in expected:
                raise self.bad_response(label, "the batch answer holds an unknown response")
            if item_id in by_id:
                raise self.bad_response(label, f"the batch answer repeats id {item_id}")
            by_id[item_id] = item
        missing = [(c.request_id, c.method) for c in chunk if c.request_id not in by_id]
        if missing:
            raise self.bad_response(
                label,
                f"the batch answer lacks {len(missing)} of {len(chunk)} responses "
                f"(first: id {missing[0][0]}, {missing[0][1]})",
            )
        if self.batches_supported is None:
            self.batches_supported = True  # never back from False: a refusal stands
        if self._too_large_bytes is not None and len(body) < self._too_large_bytes:
            self._fitting_bytes = max(self._fitting_bytes or 0, len(body))
        return [self._outcome(c.method, by_id[c.request_id], c.request_id) for c in chunk]

    def _batches_refused(self, why: str) -> None:
        if self.batches_supported is not False:  # once: arrays in flight may be refused too
            log.info(
                "%s refuses JSON-RPC batches (%s): single calls from now on", self._display, why
            )
        self.batches_supported = False

    def _refused_as_too_large(self, calls: int, size: int) -> None:
        if self._too_large_bytes is None or size < self._too_large_bytes:
            self._too_large_bytes = size
            if self._fitting_bytes is not None and self._fitting_bytes >= size:
                self._fitting_bytes = None  # the provider's limit dropped: learn it again
        log.info(
            "%s refused a JSON-RPC batch of %d calls (%d bytes) as too large (HTTP 413): "
            "sending it in halves, and arrays under %d bytes from now on",
            self._display,
            calls,
            size,
            self._too_large_bytes,
        )

    def _decoded(self, label: str, answer: _Answer) -> object:
        try:
            return parse_body(answer.payload, _as_is)
        except NotJson:
            error = self.bad_response(
                label, f"body is not JSON ({len(answer.payload)} bytes)", status=answer.status
            )
            log.warning("JSON-RPC request failed: %s", error)
            raise error from None

    def _outcome(self, method: str, response: dict[str, Any], request_id: int) -> Any | RpcError:
        response_id = response.get("id")
        error = response.get("error")
        if error is not None and response_id is None:
            return self._rpc_error(method, error)  # the node could not read the id: still ours
        if not _is_int(response_id) or response_id != request_id:
            raise self.bad_response(
                method, f"the answer's id {_snippet(response_id)} is not the request's {request_id}"
            )
        if error is not None:
            return self._rpc_error(method, error)
        if "result" not in response:
            raise self.bad_response(method, "the answer has neither a result nor an error")
        return response["result"]

    def _rpc_error(self, method: str, error: object) -> RpcError:
        if not isinstance(error, dict) or not _is_int(error.get("code")):
            raise self.bad_response(method, "the error object has no integer code")
        message = error.get("message")
        data = error.get("data")
        return RpcError(
            error["code"],
            self._scrub(_printable(message)) if isinstance(message, str) else "(no message)",
            endpoint=method,
            origin=self._display,
            data=self._scrub(data) if isinstance(data, str) else None,
        )

    # -- transport ---------------------------------------------------------------------------

    async def _post(self, label: str, data: bytes, *, array: bool) -> _Answer:
        """POST ``data`` with retries: a 2xx answer, or (``array``) a refusal of the array or
        a 413 (too large) for it."""
        breaker = self._breaker
        attempt = 0
        while True:
            attempt += 1
            paused_s = 0.0
            await self._start(label, attempt)
            try:
                status, payload, retry_after = await self._attempt(label, data, attempt)
            except _ConnectionFailed as exc:
                breaker.failed(exc.cause)
                if breaker.is_open():
                    raise breaker.error(endpoint=label, attempts=attempt) from None
                error: UpstreamError = Unavailable(
                    f"connection failed to {self._display}: {exc.cause}",
                    endpoint=label,
                    attempts=attempt,
                )
                delay = self._retry.backoff_s(attempt, self._rng)
            except UpstreamError as exc:  # timeouts and other transport failures
                error = exc
                delay = self._retry.backoff_s(attempt, self._rng)
            else:
                breaker.answered()
                if 200 <= status < 300:
                    return _Answer(status, payload)
                if array and status == _TOO_LARGE:
                    return _Answer(status, payload, too_large=True)
                if status in _JSON_RPC_ERROR_STATUSES and _holds_json_rpc_errors(payload):
                    return _Answer(status, payload)  # errors for the calls, read as such
                if array and status in _BATCH_REFUSAL_STATUSES:
                    return _Answer(status, payload, refused=True)
                error = self._status_error(label, status, payload, attempt)
                if isinstance(error, Rejected | BadResponse):
                    log.warning("JSON-RPC request failed: %s", error)
                    raise error
                delay = self._retry.backoff_s(attempt, self._rng)
                if retry_after is not None:
                    self._limiter.pause(min(retry_after, RETRY_AFTER_CEILING_S))
                    if retry_after > self._retry.retry_after_max_s:
                        log.warning("JSON-RPC request failed: %s", error)
                        raise type(error)(
                            f"{error.problem}; Retry-After {retry_after:g}s exceeds "
                            f"retry_after_max_s {self._retry.retry_after_max_s:g}s",
                            endpoint=label,
                            status=status,
                            attempts=attempt,
                        ) from None
                    paused_s, delay = retry_after, 0.0  # the limiter holds the retry
            if attempt >= self._retry.max_attempts:
                log.warning("JSON-RPC request failed: %s", error)
                raise error
            log.info("JSON-RPC request failed, retrying in %.1fs: %s", paused_s or delay, error)
            if delay > 0:
                await self._unless_breaker_opens(
                    functools.partial(self._sleep, delay), label, attempt
                )

    async def _start(self, label: str, attempt: int) -> None:
        """The limiter's go, or at once ``HostUnreachable`` (breaker open) or ``RateLimited``
        (a ``Retry-After`` pause longer than ``retry_after_max_s``)."""
        breaker = self._breaker
        if breaker.is_open():
            raise breaker.error(endpoint=label, attempts=attempt - 1)
        max_pause_s = self._retry.retry_after_max_s
        try:
            await self._unless_breaker_opens(
                functools.partial(self._limiter.acquire, max_pause_s=max_pause_s), label, attempt
            )
        except PausedTooLong as exc:
            raise RateLimited(
                f"rate limited: paused by a Retry-After for another {exc.remaining_s:.0f}s, "
                f"more than retry_after_max_s {max_pause_s:g}s ({self._display})",
                endpoint=label,
                attempts=attempt - 1,
            ) from None
        if breaker.is_open():
            raise breaker.error(endpoint=label, attempts=attempt - 1)

    async def _unless_breaker_opens(
        self, wait: Callable[[], Awaitable[None]], label: str, attempt: int
    ) -> None:
        """Await ``wait()``, but fail at once should the breaker open meanwhile (as the 1inch
        client does: a dead host must not cost every queued request its turn)."""
        breaker = self._breaker
        if not breaker.suspect:
            await wait()
            return
        if breaker.is_open():
            raise breaker.error(endpoint=label, attempts=attempt - 1)
        waiting = asyncio.ensure_future(wait())
        opened = asyncio.ensure_future(breaker.opened.wait())
        try:
            await asyncio.wait((waiting, opened), return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            if not waiting.done():
                waiting.cancel()
                await asyncio.wait((waiting,))
        if waiting.cancelled():
            raise breaker.error(endpoint=label, attempts=attempt - 1)
        waiting.result()

    async def _attempt(
        self, label: str, data: bytes, attempt: int
    ) -> tuple[int, bytes, float | None]:
        started = time.monotonic()
        self.requests_sent += 1
        try:
            async with self._session.post(
                self.endpoint.url,
                data=data,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                retry_after = _retry_after_s(response.headers.get("Retry-After"))
                status = response.status
        except TimeoutError:
            self._record(label, "timeout", started, attempt)
            raise Unavailable(
                f"no answer within {self._timeout.total:g}s from {self._display}",
                endpoint=label,
                attempts=attempt,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            self._record(label, "error", started, attempt)
            raise _ConnectionFailed(connection_failure_cause(exc)) from None
        except aiohttp.ClientError as exc:  # its text may name the URL: only its type
            self._record(label, "error", started, attempt)
            raise Unavailable(
                f"connection failed to {self._display}: {type(exc).__name__}",
                endpoint=label,
                attempts=attempt,
            ) from None
        self._record(label, str(status), started, attempt)
        return status, payload, retry_after

    def _status_error(self, label: str, status: int, payload: bytes, attempt: int) -> UpstreamError:
        kind: type[UpstreamError]
        if status == 429:
            problem, kind = "rate limited", RateLimited
        elif status >= 500:
            problem, kind = "server error", Unavailable
        elif status == 401:
            problem, kind = "credentials missing or refused", Rejected
        elif status == 403:
            problem, kind = "access forbidden", Rejected
        elif status == _TOO_LARGE:
            problem, kind = "request too large", Rejected
        elif 400 <= status < 500:
            problem, kind = "request refused", Rejected
        else:
            problem, kind = "unexpected status", BadResponse
        detail = _error_detail(payload)
        if detail:
            problem = f"{problem}: {self._scrub(detail)}"
        return kind(f"{problem} ({self._display})", endpoint=label, status=status, attempts=attempt)

    def _record(self, label: str, code: str, started: float, attempt: int) -> None:
        if self._on_request is not None:
            self._on_request(
                RequestRecord(
                    endpoint=label,
                    code=code,
                    duration_s=time.monotonic() - started,
                    request_id=None,
                    attempt=attempt,
                )
            )

    def _scrub(self, text: str) -> str:
        return self._secrets.sub("***", text) if self._secrets is not None else text


def _as_is(data: object) -> object:
    return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _holds_json_rpc_errors(payload: bytes) -> bool:
    """Whether a 4xx body is JSON-RPC responses holding an error (as some providers send a
    refused ``eth_getLogs`` range, with HTTP 400): the calls' answers, not the request's."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) and "id" in item for item in items):
        return False
    return any(isinstance(item.get("error"), dict) for item in items)


_THROTTLED = re.compile(
    r"rate.?limit|too many requests|request rate exceeded|compute units per second|"
    r"exceeded its .*capacity",
    re.IGNORECASE,
)
"""Texts of the JSON-RPC errors by which providers throttle a call (Alchemy's code 429 "Your
app has exceeded its compute units per second capacity", Infura's -32005 "project ID request
rate exceeded"). Infura's -32005 also refuses a log range: that one is no throttle."""


def _is_throttled(result: object) -> bool:
    if not isinstance(result, RpcError):
        return False
    if result.code == 3 or "revert" in result.rpc_message.lower():
        return False  # a contract's own words ("rate limited" as a revert reason)
    return result.code == 429 or _THROTTLED.search(result.rpc_message) is not None


def _is_anonymous_error(item: object) -> bool:
    return isinstance(item, dict) and item.get("id") is None and item.get("error") is not None


def _printable(text: str) -> str:
    line = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return line if len(line) <= _DETAIL_MAX_CHARS else f"{line[: _DETAIL_MAX_CHARS - 3]}..."


def _error_detail(payload: bytes) -> str | None:
    """One printable line from an HTTP error body: a JSON-RPC error's message, a
    ``message``/``error`` string, or the text itself; None for HTML or nothing."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        text = payload[:_DETAIL_MAX_CHARS].decode("utf-8", "replace")
        return None if "<" in text or not text.strip() else _printable(text)
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return _printable(error["message"])
    for key in ("message", "error", "description"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return _printable(value)
    return None


def _secret_pattern(endpoint: RpcEndpoint) -> re.Pattern[str] | None:
    """What to scrub from a provider's text: the URL and every part of it past the host (as
    sent and percent-decoded), and every header value, case-insensitively."""
    url = endpoint.url
    parts = urlsplit(url)
    after_host = url.split(parts.netloc, 1)[-1] if parts.netloc else url
    whole = {url, url.split("://", 1)[-1], after_host, parts.path, parts.query, parts.fragment}
    pieces = {parts.username or "", parts.password or ""}
    pieces.update(parts.path.split("/"))
    for pair in parts.query.split("&"):
        pieces.add(pair)
        pieces.update(pair.split("=", 1))
    for value in endpoint.headers.values():
        pieces.add(value)
        pieces.update(value.split())
    pieces = {piece for piece in pieces if len(piece) >= _MIN_SECRET_LENGTH}
    secrets = {text for text in whole | pieces if text and text not in ("/", "?")}
    secrets |= {unquote(text) for text in secrets if len(unquote(text)) >= _MIN_SECRET_LENGTH}
    if not secrets:
        return None
    ordered = sorted(secrets, key=len, reverse=True)  # the whole URL before its parts
    return re.compile("|".join(re.escape(text) for text in ordered), re.IGNORECASE)
