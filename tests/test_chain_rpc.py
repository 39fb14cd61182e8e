"""The JSON-RPC reader over real HTTP: a scripted local node for behaviour under failure, and
a real anvil node for the typed calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor.chain.rpc import (
    ChainRpc,
    RpcEndpoint,
    block_param,
    decode_data,
    decode_quantity,
    display_url,
    hex_block,
)
from monitor.errors import (
    BadResponse,
    HostUnreachable,
    RateLimited,
    Rejected,
    RpcError,
    Unavailable,
    UpstreamError,
)
from monitor.oneinch import RateLimiter
from tests.fakes import FakeClock, Sleeps

PATH_KEY = "pathkey0123456789abcdef"
QUERY_KEY = "querysecret9876543210"
BEARER_KEY = "bearerkey_abcdefghijklmnop"
SECRETS = (PATH_KEY, QUERY_KEY, BEARER_KEY)

Answer = Callable[[Any], web.StreamResponse | Any]
"""A scripted answer: given the decoded request body, a response (or a coroutine of one)."""


@dataclass
class FakeNode:
    """A JSON-RPC node on loopback: answers ``results`` by method (a callable one is given
    the params), batches unless told not to, answers 413 to an array of more than
    ``max_array`` calls or a body of more than ``max_body_bytes``, and plays ``script`` (one
    answer per HTTP request) before anything else."""

    results: dict[str, Any] = field(
        default_factory=lambda: {"eth_chainId": "0x1", "eth_blockNumber": "0x10"}
    )
    batches: bool = True
    max_array: int | None = None
    max_body_bytes: int | None = None
    script: list[Answer] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    too_large: int = 0
    """Requests answered 413."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if (self.max_body_bytes is not None and len(raw) > self.max_body_bytes) or (
            self.max_array is not None and isinstance(body, list) and len(body) > self.max_array
        ):
            self.too_large += 1
            return web.Response(status=413, text="Request Entity Too Large")
        if self.script:
            answer = self.script.pop(0)(body)
            return await answer if asyncio.iscoroutine(answer) else answer
        if isinstance(body, list):
            if not self.batches:
                return web.json_response(
                    {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no"}}
                )
            return web.json_response([self.answer(call) for call in body])
        return web.json_response(self.answer(body))

    def answer(self, call: dict[str, Any]) -> dict[str, Any]:
        method = call["method"]
        if method not in self.results:
            error = {"code": -32601, "message": f"the method {method} does not exist"}
            return {"jsonrpc": "2.0", "id": call["id"], "error": error}
        result = self.results[method]
        if callable(result):
            result = result(call["params"])
        if isinstance(result, Exception):
            error = {"code": 3, "message": str(result), "data": "0x08c379a0"}
            return {"jsonrpc": "2.0", "id": call["id"], "error": error}
        return {"jsonrpc": "2.0", "id": call["id"], "result": result}


@dataclass
class Served:
    node: FakeNode
    url: str
    session: aiohttp.ClientSession


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    node = FakeNode()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", node.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url(f"/v3/{PATH_KEY}").with_query(apikey=QUERY_KEY))
    try:
        async with aiohttp.ClientSession() as session:
            yield Served(node, url, session)
    finally:
        await server.close()


def endpoint(url: str) -> RpcEndpoint:
    return RpcEndpoint(
        chain_id=1,
        url=url,
        headers={"Authorization": f"Bearer {BEARER_KEY}"},
        origin="chains[0].rpc.url",
    )


@pytest.fixture
def make_rpc(served: Served) -> Callable[..., ChainRpc]:
    """A reader of the fake node with fast retries and no real backoff sleeps."""

    def factory(**overrides: Any) -> ChainRpc:
        options: dict[str, Any] = {
            "limiter": RateLimiter(1000),
            "max_attempts": 3,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.05,
            "timeout_s": 5.0,
            "sleep": Sleeps(),
        }
        options.update(overrides)
        return ChainRpc(served.session, endpoint(options.pop("url", served.url)), **options)

    return factory


def rpc_error_echoing_url(url: str) -> Answer:
    """A provider error that repeats the request's URL and key back, as some do."""

    def answer(body: Any) -> web.Response:
        message = f"invalid project id {PATH_KEY} for {url} (key {QUERY_KEY}, {BEARER_KEY})"
        return web.json_response(
            {"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32002, "message": message}}
        )

    return answer


def status(code: int, text: str = "", headers: dict[str, str] | None = None) -> Answer:
    return lambda body: web.Response(status=code, text=text, headers=headers)


# -- one call, batches --------------------------------------------------------------------------


async def test_a_call_returns_its_result_and_sends_json_rpc(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    rpc = make_rpc()
    assert await rpc.request("eth_chainId", []) == "0x1"
    assert not served.session.closed
    (body,) = served.node.bodies
    assert body["jsonrpc"] == "2.0"
    assert body["method"] == "eth_chainId"
    assert body["params"] == []
    assert served.node.headers[0]["Authorization"] == f"Bearer {BEARER_KEY}"
    assert served.node.headers[0]["Content-Type"] == "application/json"
    assert rpc.requests_sent == 1


async def test_an_error_object_is_raised_for_a_single_call(
    make_rpc: Callable[..., ChainRpc],
) -> None:
    with pytest.raises(RpcError) as caught:
        await make_rpc().request("eth_nope", [])
    assert caught.value.code == -32601
    assert caught.value.rpc_message == "the method eth_nope does not exist"
    assert caught.value.reason == "rpc_error"
    assert caught.value.endpoint == "eth_nope"


async def test_a_batch_is_one_request_with_results_in_call_order(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.results["eth_getBalance"] = "0xde0b6b3a7640000"
    rpc = make_rpc()
    calls = [("eth_blockNumber", []), ("eth_chainId", []), ("eth_getBalance", ["0xab", "0x1"])]
    results = await rpc.batch(calls)
    assert results == ["0x10", "0x1", "0xde0b6b3a7640000"]
    assert rpc.requests_sent == 1
    assert rpc.batches_supported is True
    (body,) = served.node.bodies
    assert [call["method"] for call in body] == [m for m, _ in calls]
    assert len({call["id"] for call in body}) == 3


async def test_a_batch_answer_in_another_order_is_matched_by_id(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    def reversed_answer(body: Any) -> web.Response:
        return web.json_response([served.node.answer(call) for call in reversed(body)])

    served.node.script.append(reversed_answer)
    results = await make_rpc().batch([("eth_blockNumber", []), ("eth_chainId", [])])
    assert results == ["0x10", "0x1"]


async def test_a_batch_is_split_into_max_batch_size_arrays(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    rpc = make_rpc(max_batch_size=2)
    results = await rpc.batch([("eth_chainId", [])] * 5)
    assert results == ["0x1"] * 5
    assert [len(b) if isinstance(b, list) else 1 for b in served.node.bodies] == [2, 2, 1]
    assert rpc.requests_sent == 3


async def test_a_call_error_in_a_batch_is_returned_in_its_place(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.results["eth_call"] = Exception("execution reverted")
    results = await make_rpc().batch([("eth_chainId", []), ("eth_call", [{}]), ("eth_nope", [])])
    assert results[0] == "0x1"
    assert isinstance(results[1], RpcError)
    assert (results[1].code, results[1].rpc_message) == (3, "execution reverted")
    assert results[1].data == "0x08c379a0"
    assert isinstance(results[2], RpcError)
    assert results[2].code == -32601


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(
            lambda body: web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no batch"}}
            ),
            id="one-error-object",
        ),
        pytest.param(status(400, '{"error": "batch requests are not supported"}'), id="http-400"),
        pytest.param(status(415, "unsupported media type"), id="http-415"),
        pytest.param(
            lambda body: web.json_response(
                [{"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "x"}}]
            ),
            id="array-of-anonymous-errors",
        ),
        pytest.param(
            lambda body: web.json_response({"jsonrpc": "2.0", "id": body[0]["id"], "result": 1}),
            id="non-array-answer",
        ),
    ],
)
async def test_a_refused_batch_falls_back_to_single_calls_for_good(
    served: Served, make_rpc: Callable[..., ChainRpc], refusal: Answer
) -> None:
    served.node.script.append(refusal)
    rpc = make_rpc()
    assert rpc.batches_supported is None
    assert await rpc.batch([("eth_blockNumber", []), ("eth_chainId", [])]) == ["0x10", "0x1"]
    assert rpc.batches_supported is False
    assert rpc.requests_sent == 3  # the refused array, then two single calls
    assert await rpc.batch([("eth_chainId", [])] * 3) == ["0x1"] * 3
    assert rpc.requests_sent == 6  # no array tried again
    assert not any(isinstance(body, list) for body in served.node.bodies[1:])


async def test_an_array_answered_413_is_halved_and_later_arrays_are_cut_up_front(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.max_array = 10
    served.node.results["eth_getBalance"] = lambda params: hex(int(params[0], 16) * 3)
    rpc = make_rpc()
    calls = [("eth_getBalance", [hex(i), "latest"]) for i in range(100)]

    assert await rpc.batch(calls) == [hex(i * 3) for i in range(100)]

    assert rpc.batches_supported is True
    assert rpc.requests_sent == len(served.node.bodies)
    assert served.node.too_large == 4  # 100, 50, 25 and 13 calls; 7 passed, then the rest
    assert [len(b) for b in served.node.bodies[:4]] == [100, 50, 25, 13]
    limit = rpc.batch_bytes_limit
    assert limit is not None
    assert all(len(b) <= 10 for b in served.node.bodies[4:])
    assert rpc.requests_sent <= 4 + 2 * math.ceil(100 / 10)  # arrays of 6 or 7 calls

    sent_before = rpc.requests_sent
    more = [("eth_getBalance", [hex(i), "latest"]) for i in range(100, 200)]
    assert await rpc.batch(more) == [hex(i * 3) for i in range(100, 200)]

    later = served.node.bodies[sent_before:]
    assert served.node.too_large == 4  # cut up front: no 413 again
    assert all(isinstance(b, list) and 5 <= len(b) <= 10 for b in later[:-1])
    assert all(len(json.dumps(b, separators=(",", ":"))) <= limit for b in later)
    assert len(later) <= math.ceil(100 / 5)
    assert rpc.requests_sent == sent_before + len(later)


async def test_a_body_limit_learned_from_large_calls_does_not_refuse_arrays(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.max_body_bytes = 3_000
    served.node.results["eth_call"] = "0x01"
    rpc = make_rpc()
    big = [("eth_call", [{"to": "0x" + "ab" * 20, "data": "0x" + "00" * 500}, "latest"])] * 8

    assert await rpc.batch(big) == ["0x01"] * 8
    assert await rpc.batch([("eth_chainId", [])] * 30) == ["0x1"] * 30

    assert rpc.batches_supported is True
    assert served.node.too_large >= 1
    assert len(served.node.bodies[-1]) == 30  # small calls still go 30 to an array


async def test_a_single_call_answered_413_is_rejected_naming_the_method(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.max_body_bytes = 600
    rpc = make_rpc()
    huge = ("eth_call", [{"to": "0x" + "ab" * 20, "data": "0x" + "00" * 400}, "latest"])

    with pytest.raises(Rejected, match="request too large") as caught:
        await rpc.batch([("eth_chainId", []), huge])

    assert caught.value.endpoint == "eth_call"
    assert caught.value.status == 413
    assert rpc.batches_supported is not False
    assert [len(b) if isinstance(b, list) else b["method"] for b in served.node.bodies] == [
        2,
        "eth_chainId",
        "eth_call",
    ]


async def test_an_array_answered_while_another_is_refused_cannot_undo_the_refusal(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    refused = asyncio.Event()

    async def answer_after_the_refusal(body: Any) -> web.Response:
        await refused.wait()
        return web.json_response([served.node.answer(call) for call in body])

    def refuse(body: Any) -> web.Response:
        refused.set()
        return web.Response(status=400, text="batch requests are not supported")

    served.node.script.extend([answer_after_the_refusal, refuse])
    rpc = make_rpc()

    first, second = await asyncio.gather(
        rpc.batch([("eth_chainId", [])] * 2), rpc.batch([("eth_blockNumber", [])] * 2)
    )

    assert (first, second) == (["0x1"] * 2, ["0x10"] * 2)
    assert rpc.batches_supported is False
    sent = len(served.node.bodies)
    assert await rpc.batch([("eth_chainId", [])] * 2) == ["0x1"] * 2
    assert not any(isinstance(b, list) for b in served.node.bodies[sent:])


async def test_a_node_refusing_every_batch_gets_single_calls(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.batches = False
    served.node.results["eth_call"] = Exception("execution reverted")
    rpc = make_rpc()
    results = await rpc.batch([("eth_chainId", []), ("eth_call", [{}])])
    assert results[0] == "0x1"
    assert isinstance(results[1], RpcError)
    assert rpc.requests_sent == 3


async def test_an_unauthorized_array_is_rejected_not_taken_for_a_refusal(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.append(status(401, "invalid key"))
    rpc = make_rpc()
    with pytest.raises(Rejected, match="HTTP 401"):
        await rpc.batch([("eth_chainId", [])] * 2)
    assert rpc.batches_supported is None


RANGE_REFUSAL = {"code": -32602, "message": "Log response size exceeded. Try a smaller range"}


async def test_a_json_rpc_error_sent_with_http_400_is_the_call_s_answer(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.append(
        lambda body: web.json_response(
            {"jsonrpc": "2.0", "id": body["id"], "error": RANGE_REFUSAL}, status=400
        )
    )
    rpc = make_rpc()
    with pytest.raises(RpcError) as caught:
        await rpc.get_logs(from_block=0, to_block=10**6, topics=[])
    assert (caught.value.code, caught.value.rpc_message) == (
        RANGE_REFUSAL["code"],
        RANGE_REFUSAL["message"],
    )
    assert rpc.requests_sent == 1


async def test_a_batch_answered_with_http_400_and_per_call_errors_is_no_refusal(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    def answer(body: Any) -> web.Response:
        first = {"jsonrpc": "2.0", "id": body[0]["id"], "error": RANGE_REFUSAL}
        return web.json_response([first, served.node.answer(body[1])], status=400)

    served.node.script.append(answer)
    rpc = make_rpc()
    results = await rpc.batch([("eth_getLogs", [{}]), ("eth_chainId", [])])
    assert isinstance(results[0], RpcError)
    assert results[1] == "0x1"
    assert rpc.batches_supported is True
    assert rpc.requests_sent == 1


async def test_an_empty_batch_sends_nothing(make_rpc: Callable[..., ChainRpc]) -> None:
    rpc = make_rpc()
    assert await rpc.batch([]) == []
    assert rpc.requests_sent == 0


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        pytest.param(lambda body: web.json_response(body[:1]), "lacks 1 of 2", id="missing-id"),
        pytest.param(
            lambda body: web.json_response([{**body[0], "result": "0x1"}] * 2),
            "repeats id",
            id="duplicate-id",
        ),
        pytest.param(
            lambda body: web.json_response(
                [{"jsonrpc": "2.0", "id": 999, "result": "0x1"}, {**body[1], "result": "0x1"}]
            ),
            "unknown response",
            id="unknown-id",
        ),
        pytest.param(lambda body: web.json_response([]), "lacks 2 of 2", id="empty-array"),
    ],
)
async def test_a_batch_answer_that_does_not_match_the_ids_is_a_bad_response(
    served: Served, make_rpc: Callable[..., ChainRpc], answer: Answer, match: str
) -> None:
    served.node.script.append(answer)
    with pytest.raises(BadResponse, match=match):
        await make_rpc().batch([("eth_chainId", []), ("eth_blockNumber", [])])


async def test_a_single_answer_with_another_id_is_a_bad_response(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.append(
        lambda body: web.json_response({"jsonrpc": "2.0", "id": body["id"] + 1, "result": "0x1"})
    )
    with pytest.raises(BadResponse, match=r"^eth_chainId: the answer's id \d+ is not the"):
        await make_rpc().chain_id()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param(b"<html>502 Bad Gateway</html>", "body is not JSON", id="html"),
        pytest.param(b'{"jsonrpc": "2.0", "id": 1', "body is not JSON", id="truncated"),
        pytest.param(b'["not", "an", "object"]', "not a JSON-RPC response", id="array"),
        pytest.param(b'"0x1"', "not a JSON-RPC response", id="bare-string"),
    ],
)
async def test_a_body_that_is_not_a_json_rpc_response_is_a_bad_response(
    served: Served, make_rpc: Callable[..., ChainRpc], body: bytes, match: str
) -> None:
    served.node.script.append(lambda _: web.Response(body=body, content_type="application/json"))
    rpc = make_rpc()
    with pytest.raises(BadResponse, match=match) as caught:
        await rpc.request("eth_chainId", [])
    assert caught.value.endpoint == "eth_chainId"
    assert rpc.requests_sent == 1  # never retried


async def test_an_answer_with_neither_result_nor_error_is_a_bad_response(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.append(lambda body: web.json_response({"jsonrpc": "2.0", "id": body["id"]}))
    with pytest.raises(BadResponse, match="neither a result nor an error"):
        await make_rpc().request("eth_chainId", [])


# -- retries ------------------------------------------------------------------------------------


async def test_a_429_with_retry_after_pauses_the_limiter_then_succeeds(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock, sleep=clock.sleep)
    served.node.script.append(status(429, "slow down", {"Retry-After": "7"}))
    sleeps = Sleeps()
    rpc = make_rpc(limiter=limiter, sleep=sleeps)
    assert await rpc.block_number() == 16
    assert rpc.requests_sent == 2
    assert limiter.paused_s() == 0.0
    assert any(abs(s - 7.0) < 0.01 for s in clock.sleeps)  # the limiter held the retry
    assert sleeps.delays == []  # no backoff on top of the pause


async def test_a_batch_is_retried_after_a_429(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.append(status(429))
    rpc = make_rpc()
    assert await rpc.batch([("eth_chainId", [])] * 2) == ["0x1", "0x1"]
    assert rpc.requests_sent == 2
    assert rpc.batches_supported is True


async def test_rate_limited_on_every_attempt_is_rate_limited(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.extend([status(429)] * 3)
    with pytest.raises(RateLimited, match="after 3 attempts"):
        await make_rpc().chain_id()


async def test_a_retry_after_over_the_limit_fails_at_once(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.append(status(429, headers={"Retry-After": "3600"}))
    rpc = make_rpc(retry_after_max_s=60)
    with pytest.raises(RateLimited, match="Retry-After 3600s exceeds"):
        await rpc.chain_id()
    assert rpc.requests_sent == 1


async def test_server_errors_are_retried_until_attempts_run_out(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.extend([status(502, "bad gateway")] * 4)
    sleeps = Sleeps()
    rpc = make_rpc(sleep=sleeps)
    with pytest.raises(Unavailable, match="server error") as caught:
        await rpc.chain_id()
    assert caught.value.status == 502
    assert caught.value.attempts == 3
    assert rpc.requests_sent == 3
    assert len(sleeps.delays) == 2
    assert all(0 < d <= 0.05 for d in sleeps.delays)


async def test_a_server_error_then_an_answer_succeeds(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.append(status(503))
    assert await make_rpc().chain_id() == 1


async def test_a_timeout_is_retried_then_unavailable(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    async def slow(body: Any) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    served.node.script.extend([slow, slow])
    rpc = make_rpc(timeout_s=0.05, max_attempts=2)
    with pytest.raises(Unavailable, match=r"no answer within 0\.05s"):
        await rpc.chain_id()
    assert rpc.requests_sent == 2


THROTTLE = {"code": 429, "message": "Your app has exceeded its compute units per second capacity"}


async def test_calls_throttled_inside_a_batch_are_sent_again(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    def second_throttled(body: Any) -> web.Response:
        throttled = {"jsonrpc": "2.0", "id": body[1]["id"], "error": THROTTLE}
        return web.json_response([served.node.answer(body[0]), throttled])

    served.node.script.append(second_throttled)
    sleeps = Sleeps()
    rpc = make_rpc(sleep=sleeps)
    assert await rpc.batch([("eth_chainId", []), ("eth_blockNumber", [])]) == ["0x1", "0x10"]
    assert served.node.bodies[1]["method"] == "eth_blockNumber"  # only the throttled one
    assert rpc.requests_sent == 2
    assert len(sleeps.delays) == 1


async def test_a_call_throttled_on_every_attempt_is_rate_limited(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    infura = {"code": -32005, "message": "project ID request rate exceeded"}
    served.node.script.extend(
        [lambda body: web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": infura})] * 3
    )
    rpc = make_rpc()
    with pytest.raises(RateLimited, match="project ID request rate exceeded") as caught:
        await rpc.chain_id()
    assert caught.value.attempts == 3
    assert rpc.requests_sent == 3


async def test_a_revert_whose_reason_speaks_of_a_rate_limit_is_no_throttle(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.results["eth_call"] = Exception("execution reverted: rate limit exceeded")
    rpc = make_rpc()
    (result,) = await rpc.batch([("eth_call", [{}])])
    assert isinstance(result, RpcError)
    assert rpc.requests_sent == 1


async def test_a_range_refusal_is_no_throttle(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    infura = {"code": -32005, "message": "query returned more than 10000 results"}
    served.node.script.append(
        lambda body: web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": infura})
    )
    rpc = make_rpc()
    with pytest.raises(RpcError, match="more than 10000 results"):
        await rpc.get_logs(from_block=0, to_block=1, topics=[])
    assert rpc.requests_sent == 1


async def test_other_4xx_are_rejected_without_retry(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.append(status(403, '{"message": "origin not allowed"}'))
    rpc = make_rpc()
    with pytest.raises(Rejected, match="access forbidden: origin not allowed") as caught:
        await rpc.chain_id()
    assert caught.value.status == 403
    assert rpc.requests_sent == 1


async def test_a_host_that_refuses_connections_opens_the_breaker(
    http_session: aiohttp.ClientSession,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v3/{PATH_KEY}?apikey={QUERY_KEY}"
    rpc = ChainRpc(
        http_session,
        endpoint(url),
        limiter=RateLimiter(1000),
        max_attempts=5,
        backoff_initial_s=0.001,
        sleep=Sleeps(),
    )
    with pytest.raises(HostUnreachable, match="connection refused") as caught:
        await rpc.chain_id()
    assert rpc.requests_sent == 3  # the breaker opens at the third refusal
    with pytest.raises(HostUnreachable):
        await rpc.chain_id()
    assert rpc.requests_sent == 3  # and fails the next request at once
    assert PATH_KEY not in str(caught.value)


# -- hex ----------------------------------------------------------------------------------------


def test_quantities_are_exact_ints() -> None:
    assert decode_quantity("0x0") == 0
    assert decode_quantity("0x1b4") == 436
    assert decode_quantity("0xDE0B6B3A7640000") == 10**18
    assert decode_quantity("0x" + "f" * 64) == 2**256 - 1
    assert decode_quantity("0x00ff") == 255  # leading zeros (some providers pad)


@pytest.mark.parametrize(
    "value",
    ["0x", "1b4", "0X1b4", "-0x1", "0x-1", "0x1_0", " 0x1", "0x1 ", "0xg", "0x" + "f" * 65, 436,
     4.0, None, True, ["0x1"]],
)  # fmt: skip
def test_anything_but_a_hex_quantity_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="quantity"):
        decode_quantity(value)


def test_data_is_whole_bytes_of_hex() -> None:
    assert decode_data("0x") == b""
    assert decode_data("0x00ff") == b"\x00\xff"
    for bad in ("0x0", "00ff", "0x0g", None, b"0x00"):
        with pytest.raises(ValueError, match="not hex data"):
            decode_data(bad)


def test_block_parameters() -> None:
    assert hex_block(0) == "0x0"
    assert hex_block(19_000_000) == "0x121eac0"
    assert block_param("latest") == "latest"
    assert block_param(255) == "0xff"
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError):
            hex_block(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown block tag"):
        block_param("newest")


async def test_a_malformed_result_is_a_bad_response_naming_the_method(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.results["eth_blockNumber"] = 16
    served.node.results["eth_getCode"] = "0xabc"
    served.node.results["eth_getLogs"] = {"logs": []}
    served.node.results["eth_getBlockByNumber"] = None
    rpc = make_rpc()
    with pytest.raises(BadResponse, match=r"^eth_blockNumber: result: not a hex quantity: 16"):
        await rpc.block_number()
    with pytest.raises(BadResponse, match=r"^eth_getCode: result: not hex data"):
        await rpc.get_code("0x" + "00" * 20)
    with pytest.raises(BadResponse, match=r"^eth_getLogs: "):
        await rpc.get_logs(from_block=0, to_block=1, topics=[])
    with pytest.raises(BadResponse, match=r"^eth_getBlockByNumber: no block 7"):
        await rpc.block_timestamp(7)


async def test_typed_calls_send_the_documented_params(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.results.update(
        {
            "eth_getLogs": [{"logIndex": "0x0"}],
            "eth_call": "0x0001",
            "eth_getBalance": "0x" + "f" * 64,
            "eth_getBlockByNumber": {"number": "0x5", "timestamp": "0x65a0c8e0"},
        }
    )
    rpc = make_rpc()
    topic = "0x" + "ab" * 32
    logs = await rpc.get_logs(
        from_block=10, to_block=20, topics=[topic, [topic, topic], None], address=["0x01"]
    )
    assert logs == [{"logIndex": "0x0"}]
    assert await rpc.call("0x02", b"\x12\x34", block=5) == b"\x00\x01"
    assert await rpc.get_balance("0x03") == 2**256 - 1
    assert await rpc.block_timestamp(5) == 0x65A0C8E0
    params = [body["params"] for body in served.node.bodies]
    assert params == [
        [{"fromBlock": "0xa", "toBlock": "0x14", "topics": [topic, [topic, topic], None],
          "address": ["0x01"]}],
        [{"to": "0x02", "data": "0x1234"}, "0x5"],
        ["0x03", "latest"],
        ["0x5", False],
    ]  # fmt: skip


# -- redaction ----------------------------------------------------------------------------------


def test_an_endpoint_shows_scheme_and_host_only() -> None:
    point = endpoint(f"https://user:{QUERY_KEY}@Mainnet.Example.io/v3/{PATH_KEY}?apikey=x")
    assert point.display == "https://mainnet.example.io"
    assert str(point) == "https://mainnet.example.io"
    assert repr(point) == (
        "RpcEndpoint(chain_id=1, https://mainnet.example.io, origin='chains[0].rpc.url')"
    )
    assert display_url("http://[::1]:8545/k") == "http://[::1]:8545"
    assert display_url("https://host:443/k") == "https://host:443"


def assert_secret_free(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret.lower() not in text.lower(), f"{secret} leaked into: {text}"


FAILURES: dict[str, list[Answer]] = {
    "rpc-error": [],  # filled per test: the error echoes the URL
    "http-400-echo": [],
    "http-500-echo": [],
    "not-json": [lambda _: web.Response(body=b"\xff\x00 not json")],
    "id-mismatch": [lambda body: web.json_response({"jsonrpc": "2.0", "id": -5, "result": 1})],
    "bad-quantity": [lambda body: web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": "x"})],
    "429-exhausted": [status(429)] * 3,
}  # fmt: skip


@pytest.mark.parametrize("failure", [*FAILURES, "timeout", "connection-refused"])
async def test_no_failure_shows_the_secret_parts_of_the_url(
    served: Served,
    make_rpc: Callable[..., ChainRpc],
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = served.url
    script = list(FAILURES.get(failure, []))
    if failure == "rpc-error":
        script = [rpc_error_echoing_url(url)]
    elif failure == "http-400-echo":
        script = [status(400, f'{{"error": "bad key {PATH_KEY} in {url}"}}')]
    elif failure == "http-500-echo":
        script = [status(500, f"upstream {url} failed for {QUERY_KEY}")] * 3
    elif failure == "timeout":

        async def slow(body: Any) -> web.Response:
            await asyncio.sleep(5)
            return web.json_response({})

        script = [slow] * 3
    elif failure == "connection-refused":
        url = f"http://127.0.0.1:{closed_port()}/v3/{PATH_KEY}?apikey={QUERY_KEY}"
    served.node.script.extend(script)
    rpc = make_rpc(url=url, timeout_s=0.05)
    with pytest.raises(UpstreamError) as caught:
        await rpc.chain_id()
    exc = caught.value
    rendered = "".join(traceback.format_exception(exc))
    # Every log record but the fake provider's own access log (the server side).
    logged = [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]
    if failure not in ("rpc-error", "id-mismatch", "bad-quantity"):  # the others log nothing
        assert any("JSON-RPC request failed" in line for line in logged)
    assert_secret_free(str(exc), repr(exc), rendered, *logged, repr(rpc), repr(rpc.endpoint))
    assert "127.0.0.1" in str(exc)  # it still says which host failed
    if isinstance(exc, RpcError):
        assert "***" in exc.rpc_message
        assert_secret_free(exc.rpc_message, exc.data or "")


async def test_a_batch_error_echoing_the_url_is_scrubbed(
    served: Served, make_rpc: Callable[..., ChainRpc]
) -> None:
    served.node.script.append(lambda body: web.json_response([_echo_obj(c) for c in body]))
    results = await make_rpc().batch([("eth_chainId", [])] * 2)
    for result in results:
        assert isinstance(result, RpcError)
        assert_secret_free(str(result), repr(result), result.rpc_message)
        assert "127.0.0.1" in str(result)


def _echo_obj(call: dict[str, Any]) -> dict[str, Any]:
    message = f"key {PATH_KEY.upper()} refused; see {QUERY_KEY}"
    return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32002, "message": message}}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a real node --------------------------------------------------------------------------------

ANVIL_CANDIDATES = (Path(__file__).resolve().parent.parent / ".tools" / "bin" / "anvil",)


def anvil_binary() -> str | None:
    found = shutil.which("anvil")
    if found:
        return found
    return next((str(p) for p in ANVIL_CANDIDATES if os.access(p, os.X_OK)), None)


@contextlib.contextmanager
def running_anvil() -> Iterator[str]:
    binary = anvil_binary()
    if binary is None:
        pytest.skip("anvil is neither on PATH nor in .tools/bin (scripts/tools installs it)")
    port = closed_port()
    process = subprocess.Popen(
        [binary, "--chain-id", "1", "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"anvil did not start on port {port} (exit {process.poll()})")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


ANVIL_FIRST_ACCOUNT = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"


async def test_against_a_real_anvil_node(http_session: aiohttp.ClientSession) -> None:
    with running_anvil() as url:
        rpc = ChainRpc(http_session, endpoint(url + "/"), limiter=RateLimiter(1000))
        assert await rpc.chain_id() == 1
        assert await rpc.block_number() == 0
        assert await rpc.get_balance(ANVIL_FIRST_ACCOUNT) == 10_000 * 10**18
        assert await rpc.get_balance(ANVIL_FIRST_ACCOUNT, block=0) == 10_000 * 10**18
        block = await rpc.get_block(0)
        assert block["number"] == "0x0"
        assert await rpc.block_timestamp(0) == int(block["timestamp"], 16) > 1_600_000_000
        assert await rpc.get_code(ANVIL_FIRST_ACCOUNT) == b""
        await rpc.request("anvil_setCode", [ANVIL_FIRST_ACCOUNT, "0x6001600101"])
        assert await rpc.get_code(ANVIL_FIRST_ACCOUNT) == bytes.fromhex("6001600101")
        assert await rpc.get_logs(from_block=0, to_block=0, topics=[]) == []
        results = await rpc.batch([("eth_chainId", []), ("eth_nope", []), ("eth_blockNumber", [])])
        assert results[0] == "0x1"
        assert isinstance(results[1], RpcError)
        assert results[2] == "0x0"
        assert rpc.batches_supported is True
        with pytest.raises(RpcError):
            await rpc.request("eth_getBalance", ["not an address", "latest"])
        with pytest.raises(BadResponse, match="no block 99"):
            await rpc.get_block(99)
