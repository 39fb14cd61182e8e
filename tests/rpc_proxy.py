"""A JSON-RPC proxy for the chain tests: forwards every request to a node (anvil), records
each call it is asked (method, params, whether it came in a batch array, the path and query
it was sent to), and can behave like a real provider in two ways:

- refuse an ``eth_getLogs`` over more than ``max_log_blocks`` blocks with a provider's own
  error (``ALCHEMY_REFUSAL``: HTTP 400, code -32602 "Log response size exceeded..."; or
  ``INFURA_REFUSAL``: HTTP 200, code -32005 "query returned more than 10000 results");
- refuse JSON-RPC batch arrays (``refuse_batches``), answering an array with one error object
  with no id, as providers without batch support do.

It runs its own event loop in a thread, so a synchronous test can start the CLI as a
subprocess against ``proxy.url`` while the proxy serves::

    with RpcProxy(node.url, max_log_blocks=500) as proxy:
        subprocess.run([... "once" ...], env={"EXPOSURE_MONITOR_RPC_URL_1": proxy.url + "?k=x"})
        ranges = proxy.log_ranges()

Any path and query are accepted (and recorded), so a test can put a provider key in both and
check it reached the proxy but nothing else.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

ALCHEMY_MESSAGE = (
    "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
    "range and no limit on the response size, or you can request any block range with a cap "
    "of 10K logs in the response."
)
INFURA_MESSAGE = "query returned more than 10000 results"


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """How a provider refuses an ``eth_getLogs`` range: the HTTP status and the error object."""

    name: str
    http_status: int
    code: int
    message: str


ALCHEMY_REFUSAL = Refusal(name="alchemy", http_status=400, code=-32602, message=ALCHEMY_MESSAGE)
INFURA_REFUSAL = Refusal(name="infura", http_status=200, code=-32005, message=INFURA_MESSAGE)
BATCH_REFUSAL_MESSAGE = "Batch requests are not supported"


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One JSON-RPC call the proxy was asked."""

    method: str
    params: list[Any]
    in_batch: bool
    """Whether it came inside a batch array (answered or refused)."""
    path_qs: str
    refused: bool = False
    """Answered by the proxy with a refusal instead of being forwarded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogQuery:
    """One ``eth_getLogs`` asked: its block range and the owners OR-ed in topic 1."""

    from_block: int
    to_block: int
    owners: tuple[str, ...]
    refused: bool

    @property
    def blocks(self) -> int:
        return self.to_block - self.from_block + 1


class RpcProxy:
    """A recording, optionally refusing, JSON-RPC proxy in front of ``upstream``."""

    def __init__(
        self,
        upstream: str,
        *,
        max_log_blocks: int | None = None,
        refusal: Refusal = ALCHEMY_REFUSAL,
        refuse_batches: bool = False,
    ) -> None:
        self.upstream = upstream
        self.max_log_blocks = max_log_blocks
        self.refusal = refusal
        self.refuse_batches = refuse_batches
        self.calls: list[Call] = []
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, no path: append a path or query as you like."""
        return f"http://127.0.0.1:{self.port}"

    # -- what was asked ----------------------------------------------------------------------

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def methods(self) -> list[str]:
        return [call.method for call in self.snapshot()]

    def log_queries(self) -> list[LogQuery]:
        """Every ``eth_getLogs`` asked, in order, refused ones included."""
        queries = []
        for call in self.snapshot():
            if call.method != "eth_getLogs":
                continue
            query = call.params[0]
            owners = query.get("topics", [None, None])[1]
            owners = [owners] if isinstance(owners, str) else (owners or [])
            queries.append(
                LogQuery(
                    from_block=int(query["fromBlock"], 16),
                    to_block=int(query["toBlock"], 16),
                    owners=tuple("0x" + topic[-40:].lower() for topic in owners),
                    refused=call.refused,
                )
            )
        return queries

    def eth_calls_to(self, address: str) -> list[Call]:
        address = address.lower()
        return [
            call
            for call in self.snapshot()
            if call.method == "eth_call" and str(call.params[0].get("to", "")).lower() == address
        ]

    # -- serving -----------------------------------------------------------------------------

    def start(self) -> RpcProxy:
        self._thread = threading.Thread(target=self._run, name="rpc-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise AssertionError("the RPC proxy did not start in 10 s")
        if self._failure is not None:
            raise AssertionError(f"the RPC proxy failed to start: {self._failure!r}")
        return self

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread is not None:
            loop.call_soon_threadsafe(stop.set)
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> RpcProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            app = web.Application()

            async def handle(request: web.Request) -> web.Response:
                return await self._handle(request, session)

            app.router.add_post("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

    async def _handle(self, request: web.Request, session: aiohttp.ClientSession) -> web.Response:
        body = await request.json()
        path_qs = request.path_qs
        if isinstance(body, list):
            return await self._handle_array(body, path_qs, session)
        refusal = self._range_refusal(body)
        self._record(body, in_batch=False, path_qs=path_qs, refused=refusal is not None)
        if refusal is not None:
            return web.json_response(refusal, status=self.refusal.http_status)
        return web.json_response(await self._forward(session, body))

    async def _handle_array(
        self, body: list[dict[str, Any]], path_qs: str, session: aiohttp.ClientSession
    ) -> web.Response:
        if self.refuse_batches:
            for call in body:
                self._record(call, in_batch=True, path_qs=path_qs, refused=True)
            return web.json_response(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": BATCH_REFUSAL_MESSAGE},
                }
            )
        refusals = [self._range_refusal(call) for call in body]
        for call, refusal in zip(body, refusals, strict=True):
            self._record(call, in_batch=True, path_qs=path_qs, refused=refusal is not None)
        forwarded = [call for call, refusal in zip(body, refusals, strict=True) if refusal is None]
        answers: list[dict[str, Any]] = await self._forward(session, forwarded) if forwarded else []
        by_id = {answer.get("id"): answer for answer in answers}
        merged = [
            refusal if refusal is not None else by_id[call.get("id")]
            for call, refusal in zip(body, refusals, strict=True)
        ]
        status = self.refusal.http_status if any(r is not None for r in refusals) else 200
        return web.json_response(merged, status=status)

    async def _forward(self, session: aiohttp.ClientSession, body: object) -> Any:
        async with session.post(self.upstream, json=body) as answer:
            return await answer.json(content_type=None)

    def _range_refusal(self, call: dict[str, Any]) -> dict[str, Any] | None:
        if self.max_log_blocks is None or call.get("method") != "eth_getLogs":
            return None
        query = call["params"][0]
        blocks = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
        if blocks <= self.max_log_blocks:
            return None
        error = {"code": self.refusal.code, "message": self.refusal.message}
        return {"jsonrpc": "2.0", "id": call.get("id"), "error": error}

    def _record(self, call: dict[str, Any], *, in_batch: bool, path_qs: str, refused: bool) -> None:
        with self._lock:
            self.calls.append(
                Call(
                    method=str(call.get("method")),
                    params=json.loads(json.dumps(call.get("params", []))),
                    in_batch=in_batch,
                    path_qs=path_qs,
                    refused=refused,
                )
            )


__all__ = [
    "ALCHEMY_REFUSAL",
    "INFURA_REFUSAL",
    "Call",
    "LogQuery",
    "Refusal",
    "RpcProxy",
]
