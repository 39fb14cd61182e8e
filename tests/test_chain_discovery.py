"""``ApprovalScanner`` against a fake node that serves logs from a list, records every
``eth_getLogs`` it is asked, and refuses ranges the way real providers word it."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor.chain.abi import APPROVAL_TOPIC0, topic_for_address
from monitor.chain.discovery import (
    ApprovalScanner,
    LogRangeRefused,
    ScanChunk,
    ScanProgress,
    is_range_refusal,
)
from monitor.chain.rpc import ChainRpc, RpcEndpoint
from monitor.errors import BadResponse, RateLimited, Rejected, RpcError, Unavailable
from monitor.oneinch import RateLimiter
from monitor.store import migrate
from monitor.store.discovery import SqlDiscoveryStore
from monitor.store.engine import create_engine
from tests.chain_helpers import Anvil, anvil_fixture

W1 = "0x" + "a1" * 20
W2 = "0x" + "a2" * 20
W3 = "0x" + "a3" * 20
W4 = "0x" + "a4" * 20
W5 = "0x" + "a5" * 20
STRANGER = "0x" + "ee" * 20
TK1 = "0x" + "c1" * 20
TK2 = "0x" + "c2" * 20
S1 = "0x" + "51" * 20
S2 = "0x" + "52" * 20

ALCHEMY = (
    "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
    "range and no limit on the response size, or you can request any block range with a cap "
    "of 10K logs in the response."
)
PROVIDER_REFUSALS: dict[str, Callable[[], BaseException]] = {
    "alchemy": lambda: RpcError(-32602, ALCHEMY, endpoint="eth_getLogs", origin="https://a.io"),
    "infura": lambda: RpcError(
        -32005,
        "query returned more than 10000 results",
        endpoint="eth_getLogs",
        origin="https://i.io",
    ),
    "too wide": lambda: RpcError(
        -32600, "block range is too wide", endpoint="eth_getLogs", origin="https://r.io"
    ),
    "maximum": lambda: RpcError(
        -32000, "exceed maximum block range: 5000", endpoint="eth_getLogs", origin="https://r.io"
    ),
    "quicknode": lambda: RpcError(
        -32602,
        "eth_getLogs is limited to a 10,000 range",
        endpoint="eth_getLogs",
        origin="https://q.io",
    ),
    "http 413": lambda: Rejected(
        "request refused: block range too large (https://r.io)", endpoint="eth_getLogs", status=413
    ),
    "http 400": lambda: Rejected(
        "request refused: query exceeds max results 20000 (https://r.io)",
        endpoint="eth_getLogs",
        status=400,
    ),
    "bad response": lambda: BadResponse(
        "Log response size exceeded (https://r.io)", endpoint="eth_getLogs", status=200
    ),
}
NOT_REFUSALS: dict[str, BaseException] = {
    "rate limit": RpcError(
        -32005,
        "daily request count exceeded, request rate limited",
        endpoint="eth_getLogs",
        origin="x",
    ),
    "revert": RpcError(3, "execution reverted", endpoint="eth_call", origin="x"),
    "no method": RpcError(
        -32601, "the method eth_getLogs does not exist", endpoint="eth_getLogs", origin="x"
    ),
    "429": RateLimited("rate limited", endpoint="eth_getLogs", status=429),
    "503": Unavailable("server error: block range too wide", endpoint="eth_getLogs", status=503),
    "401": Rejected("credentials missing or refused", endpoint="eth_getLogs", status=401),
    "not upstream": ValueError("block range is too wide"),
}


def block_time(block: int) -> int:
    return 1_600_000_000 + 12 * block


def approval(
    owner: str,
    block: int,
    *,
    token: str = TK1,
    spender: str = S1,
    index: int = 0,
    removed: bool = False,
    nft: bool = False,
) -> dict[str, Any]:
    """A raw log object as eth_getLogs answers it."""
    topics = [APPROVAL_TOPIC0, topic_for_address(owner), topic_for_address(spender)]
    data = "0x" + f"{7:064x}"
    if nft:
        topics.append("0x" + f"{42:064x}")  # token id
        data = "0x"
    return {
        "address": token,
        "topics": topics,
        "data": data,
        "blockNumber": hex(block),
        "logIndex": hex(index),
        "transactionHash": "0x" + f"{block * 1000 + index:064x}",
        "transactionIndex": "0x0",
        "blockHash": "0x" + f"{block:064x}",
        "removed": removed,
    }


@dataclass(frozen=True)
class Asked:
    from_block: int
    to_block: int
    wallets: tuple[str, ...]


@dataclass
class FakeNode:
    """Serves ``logs``; ``refuse(from, to, matching logs)`` may return an error to raise."""

    logs: list[dict[str, Any]]
    refuse: Callable[[int, int, int], BaseException | None] | None = None
    honour_owner_topics: bool = True
    on_request: Callable[[], None] | None = None
    asked: list[Asked] = field(default_factory=list)
    block_reads: list[int] = field(default_factory=list)

    async def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        topics: Sequence[str | Sequence[str] | None],
        address: str | Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        assert topics[0] == APPROVAL_TOPIC0
        owners = topics[1]
        assert isinstance(owners, list)
        self.asked.append(Asked(from_block, to_block, tuple("0x" + t[-40:] for t in owners)))
        if self.on_request is not None:
            self.on_request()
        found = [
            dict(log)
            for log in self.logs
            if from_block <= int(log["blockNumber"], 16) <= to_block
            and (not self.honour_owner_topics or log["topics"][1] in owners)
        ]
        if self.refuse is not None:
            error = self.refuse(from_block, to_block, len(found))
            if error is not None:
                raise error
        return found

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        answers = []
        for method, params in calls:
            assert method == "eth_getBlockByNumber"
            number = int(params[0], 16)
            self.block_reads.append(number)
            answers.append({"number": params[0], "timestamp": hex(block_time(number))})
        return answers

    async def block_timestamp(self, number: int) -> int:
        self.block_reads.append(number)
        return block_time(number)

    def spans(self) -> list[tuple[int, int]]:
        return [(a.from_block, a.to_block) for a in self.asked]


def refuse_ranges_over(
    blocks: int, error: Callable[[], BaseException]
) -> Callable[[int, int, int], BaseException | None]:
    return lambda start, end, _found: error() if end - start + 1 > blocks else None


def refuse_results_over(
    logs: int, error: Callable[[], BaseException]
) -> Callable[[int, int, int], BaseException | None]:
    return lambda _start, _end, found: error() if found > logs else None


def keys(approvals: Sequence[Any]) -> list[tuple[str, str, str, int]]:
    return [(a.owner, a.token, a.spender, a.block_number) for a in approvals]


# -- recognising refusals --------------------------------------------------------------------


@pytest.mark.parametrize("provider", sorted(PROVIDER_REFUSALS))
def test_each_providers_range_refusal_is_recognised(provider: str) -> None:
    assert is_range_refusal(PROVIDER_REFUSALS[provider]())


@pytest.mark.parametrize("name", sorted(NOT_REFUSALS))
def test_rate_limits_reverts_and_outages_are_no_range_refusal(name: str) -> None:
    assert not is_range_refusal(NOT_REFUSALS[name])


# -- queries ---------------------------------------------------------------------------------


async def test_wallets_sharing_a_cursor_are_asked_together_in_or_lists() -> None:
    node = FakeNode([approval(W5, 10), approval(W2, 500)])
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=1000, wallets_per_query=2)

    result = await scanner.scan({w: 0 for w in (W5, W3, W1, W4, W2)}, to_block=999)

    assert node.asked == [
        Asked(0, 999, (W1, W2)),
        Asked(0, 999, (W3, W4)),
        Asked(0, 999, (W5,)),
    ]
    assert keys(result.approvals) == [(W5, TK1, S1, 10), (W2, TK1, S1, 500)]
    assert result.cursors == {w: 1000 for w in (W1, W2, W3, W4, W5)}
    assert result.requests == 3 + 2  # three eth_getLogs, two block times


async def test_a_refused_range_halves_and_a_providers_range_cap_is_learned() -> None:
    node = FakeNode([], refuse=refuse_ranges_over(250, PROVIDER_REFUSALS["maximum"]))
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=1000)

    result = await scanner.scan({W1: 0}, to_block=1999)

    assert node.spans() == [
        (0, 999),  # refused
        (0, 499),  # refused
        (0, 249),
        (250, 749),  # refused just after a small answer at half: the provider's cap
        (250, 499),
        (500, 749),
        (750, 999),
        (1000, 1249),
        (1250, 1499),
        (1500, 1749),
        (1750, 1999),
    ]
    assert result.cursors == {W1: 2000}
    assert result.requests == len(node.asked)


def alchemy_refusal(largest: int) -> Callable[[int, int, int], BaseException | None]:
    """Alchemy's refusal of a range over ``largest`` blocks, with the range it suggests."""

    def refuse(start: int, end: int, _found: int) -> BaseException | None:
        if end - start + 1 <= largest:
            return None
        size = f"{largest // 1000}K" if largest % 1000 == 0 else f"{largest:,}"
        message = (
            f"{ALCHEMY.replace('2K', size)} Based on your parameters, this block range should "
            f"work: [{hex(start)}, {hex(start + largest - 1)}]"
        )
        return RpcError(-32602, message, endpoint="eth_getLogs", origin="https://a.io")

    return refuse


def refusal_naming(text: str, largest: int) -> Callable[[int, int, int], BaseException | None]:
    error = RpcError(-32000, text, endpoint="eth_getLogs", origin="https://r.io")
    return lambda start, end, _found: error if end - start + 1 > largest else None


@pytest.mark.parametrize(
    ("refuse", "largest", "max_block_range"),
    [
        pytest.param(alchemy_refusal(2_000), 2_000, 10_000, id="alchemy-2K"),
        pytest.param(alchemy_refusal(1_500), 1_500, 10_000, id="alchemy-1,500"),
        pytest.param(
            refusal_naming("exceed maximum block range: 5000", 5_000), 5_000, 10_000, id="infura"
        ),
        pytest.param(
            refusal_naming("eth_getLogs is limited to a 10,000 range", 10_000),
            10_000,
            50_000,
            id="quicknode",
        ),
        pytest.param(
            refusal_naming("eth_getLogs is limited to a 10000 block range", 10_000),
            10_000,
            50_000,
            id="quicknode-block-range",
        ),
    ],
)
async def test_a_refusal_naming_the_allowed_range_sets_it_at_once(
    refuse: Callable[[int, int, int], BaseException | None], largest: int, max_block_range: int
) -> None:
    node = FakeNode([approval(W1, 12_345)], refuse=refuse)
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=max_block_range)

    result = await scanner.scan({W1: 0}, to_block=99_999)

    answered = [(a, b) for a, b in node.spans() if b - a + 1 <= largest]
    assert len(answered) == math.ceil(100_000 / largest)
    assert len(node.asked) == len(answered) + 1  # the first range, refused
    assert node.spans()[1] == (0, largest - 1)
    assert result.cursors == {W1: 100_000}
    assert keys(result.approvals) == [(W1, TK1, S1, 12_345)]
    assert scanner.block_range == largest


async def test_a_suggested_range_is_taken_then_a_range_cap_learned_after_small_answers() -> None:
    def refuse(start: int, end: int, _found: int) -> BaseException | None:
        if end - start + 1 <= 300:
            return None
        message = (
            "query returned more than 10000 results. Try with this block range "
            f"[{hex(start)}, {hex(start + 299)}]."
        )
        return RpcError(-32005, message, endpoint="eth_getLogs", origin="https://i.io")

    node = FakeNode([], refuse=refuse)
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=1000)

    await scanner.scan({W1: 0}, to_block=2999)

    assert node.spans() == [
        (0, 999),  # refused: the suggested 300 blocks next
        (0, 299),  # a small answer: it may grow
        (300, 899),  # refused just after a small answer: a cap, no growing past 300
        *[(start, start + 299) for start in range(300, 3000, 300)],
    ]


async def test_a_refusal_naming_a_range_it_did_not_enforce_halves_as_before() -> None:
    node = FakeNode([], refuse=refuse_ranges_over(250, PROVIDER_REFUSALS["alchemy"]))  # 2K
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=1000)

    await scanner.scan({W1: 0}, to_block=999)

    assert node.spans()[:3] == [(0, 999), (0, 499), (0, 249)]


async def test_a_range_refused_for_its_many_logs_grows_back_to_the_maximum() -> None:
    dense = [approval(W1, block, spender=S2) for block in range(8)]
    node = FakeNode(dense, refuse=refuse_results_over(4, PROVIDER_REFUSALS["infura"]))
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=64, grow_below_logs=3)

    result = await scanner.scan({W1: 0}, to_block=255)

    assert node.spans() == [
        (0, 63),  # refused: 8 logs
        (0, 31),  # refused
        (0, 15),  # refused
        (0, 7),  # refused
        (0, 3),  # 4 logs: not small, the range stays
        (4, 7),
        (8, 11),  # no logs: doubles
        (12, 19),
        (20, 35),
        (36, 67),
        (68, 131),  # back at the maximum
        (132, 195),
        (196, 255),
    ]
    assert [a.block_number for a in result.approvals] == list(range(8))


async def test_a_range_halved_for_one_or_list_reuses_the_others_answer() -> None:
    logs = [approval(W2, block, spender=S2) for block in range(6)]
    logs += [approval(W1, 10), approval(W1, 95)]
    node = FakeNode(logs, refuse=refuse_results_over(3, PROVIDER_REFUSALS["infura"]))
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=100, wallets_per_query=1)

    result = await scanner.scan({W1: 0, W2: 0}, to_block=99)

    assert [a for a in node.asked if a.wallets == (W1,)] == [Asked(0, 99, (W1,))]
    assert [(a.from_block, a.to_block) for a in node.asked if a.wallets == (W2,)] == [
        (0, 99),  # refused
        (0, 49),  # refused
        (0, 24),  # refused
        (0, 11),  # refused
        (0, 5),  # refused
        (0, 2),
        (3, 8),
        (9, 20),
        (21, 44),
        (45, 92),
        (93, 99),
    ]
    assert sorted(keys(result.approvals)) == sorted(
        [(W2, TK1, S2, b) for b in range(6)] + [(W1, TK1, S1, 10), (W1, TK1, S1, 95)]
    )


async def test_a_single_block_still_refused_is_an_error_naming_chain_and_block() -> None:
    node = FakeNode([], refuse=refuse_ranges_over(0, PROVIDER_REFUSALS["alchemy"]))
    scanner = ApprovalScanner(node, chain_id=137, max_block_range=4)

    with pytest.raises(LogRangeRefused, match=r"chain 137: .* block 100 even alone") as caught:
        await scanner.scan({W1: 100}, to_block=200)

    assert (caught.value.chain_id, caught.value.block) == (137, 100)
    assert node.spans() == [(100, 103), (100, 101), (100, 100)]


async def test_other_errors_are_not_retried_with_smaller_ranges() -> None:
    node = FakeNode([], refuse=lambda *_: NOT_REFUSALS["rate limit"])
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=100)

    with pytest.raises(RpcError, match="rate limited"):
        await scanner.scan({W1: 0}, to_block=1000)

    assert node.spans() == [(0, 99)]


async def test_a_wallet_added_later_is_scanned_alone_from_its_start_then_joins_the_others() -> None:
    node = FakeNode([approval(W1, 100), approval(W2, 100), approval(W1, 6000), approval(W2, 7000)])
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=10_000)

    result = await scanner.scan({W1: 5000, W2: 0}, to_block=9999)

    assert node.asked == [Asked(0, 4999, (W2,)), Asked(5000, 9999, (W1, W2))]
    assert keys(result.approvals) == [(W2, TK1, S1, 100), (W1, TK1, S1, 6000), (W2, TK1, S1, 7000)]
    assert result.cursors == {W1: 10_000, W2: 10_000}


async def test_wallets_at_or_past_the_end_are_not_asked_and_keep_their_cursor() -> None:
    node = FakeNode([])
    scanner = ApprovalScanner(node, chain_id=1)

    result = await scanner.scan({W1: 1000, W2: 5000}, to_block=999)

    assert node.asked == []
    assert result.cursors == {W1: 1000, W2: 5000}
    assert result.requests == 0


async def test_an_interrupted_scan_resumes_from_the_saved_cursors_without_asking_below_them() -> (
    None
):
    logs = [approval(W1, b, index=1) for b in range(0, 1000, 37)] + [
        approval(W2, b, spender=S2) for b in range(5, 1000, 91)
    ]
    saved: dict[str, int] = {W1: 0, W2: 0}
    seen: list[Any] = []
    stop_after_block = [299]

    class Interrupted(Exception):
        pass

    async def save(chunk: ScanChunk) -> None:
        saved.update(chunk.cursors)
        seen.extend(chunk.approvals)
        if chunk.to_block >= stop_after_block[0]:
            raise Interrupted

    node = FakeNode(logs)
    with pytest.raises(Interrupted):
        await ApprovalScanner(node, chain_id=1, max_block_range=100).scan(
            saved, to_block=999, on_chunk=save
        )
    assert saved == {W1: 300, W2: 300}

    stop_after_block[0] = 10**9
    resumed = FakeNode(logs)
    result = await ApprovalScanner(resumed, chain_id=1, max_block_range=100).scan(
        dict(saved), to_block=999, on_chunk=save
    )

    assert min(a.from_block for a in resumed.asked) == 300
    assert resumed.spans()[0] == (300, 399)
    expected = sorted((log["blockNumber"], log["topics"][1]) for log in logs)
    assert sorted((hex(a.block_number), topic_for_address(a.owner)) for a in seen) == expected
    assert all(a.block_number >= 300 for a in result.approvals)
    assert saved == result.cursors == {W1: 1000, W2: 1000}


async def test_a_second_scan_asks_only_for_new_blocks() -> None:
    node = FakeNode([approval(W1, 5)])
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=1000)
    first = await scanner.scan({W1: 0}, to_block=499)
    node.logs.append(approval(W1, 600))
    node.asked.clear()

    second = await scanner.scan(first.cursors, to_block=799)

    assert node.spans() == [(500, 799)]
    assert keys(second.approvals) == [(W1, TK1, S1, 600)]


# -- what counts -----------------------------------------------------------------------------


async def test_erc721_approvals_are_counted_and_not_returned() -> None:
    node = FakeNode([approval(W1, 3, nft=True), approval(W1, 4), approval(W2, 9, nft=True)])
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=100)
    chunks: list[ScanChunk] = []

    async def keep(chunk: ScanChunk) -> None:
        chunks.append(chunk)

    result = await scanner.scan({W1: 0, W2: 0}, to_block=99, on_chunk=keep)

    assert keys(result.approvals) == [(W1, TK1, S1, 4)]
    assert result.nft_approvals == 2
    assert [c.nft_approvals for c in chunks] == [2]


async def test_logs_removed_by_a_reorg_are_ignored() -> None:
    node = FakeNode([approval(W1, 3, removed=True), approval(W1, 3, nft=True, removed=True)])
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=100)

    result = await scanner.scan({W1: 0}, to_block=99)

    assert result.approvals == []
    assert result.nft_approvals == 0
    assert node.block_reads == []


async def test_approvals_of_owners_not_asked_for_are_ignored() -> None:
    node = FakeNode(
        [approval(STRANGER, 3), approval(STRANGER, 4, nft=True), approval(W1, 5), approval(W2, 6)],
        honour_owner_topics=False,  # a sloppy node answers more than it was asked
    )
    scanner = ApprovalScanner(node, chain_id=1, max_block_range=100)

    result = await scanner.scan({W1: 0, W2: 50}, to_block=99)  # W2 is asked only from 50

    assert keys(result.approvals) == [(W1, TK1, S1, 5)]
    assert result.nft_approvals == 0


async def test_logs_outside_the_asked_range_are_ignored() -> None:
    class Sloppy(FakeNode):
        async def get_logs(self, **kwargs: Any) -> list[dict[str, Any]]:
            await super().get_logs(**kwargs)
            return [dict(log) for log in self.logs]

    node = Sloppy([approval(W1, 3), approval(W1, 150)])
    result = await ApprovalScanner(node, chain_id=1, max_block_range=100).scan(
        {W1: 100}, to_block=199
    )

    assert keys(result.approvals) == [(W1, TK1, S1, 150)]


async def test_a_chunk_carries_the_block_time_of_each_pairs_newest_approval() -> None:
    node = FakeNode(
        [
            approval(W1, 10),
            approval(W1, 20, index=3),
            approval(W1, 15, token=TK2),
            approval(W2, 20, index=4, spender=S2),
        ]
    )
    chunks: list[ScanChunk] = []

    async def keep(chunk: ScanChunk) -> None:
        chunks.append(chunk)

    await ApprovalScanner(node, chain_id=1, max_block_range=100).scan(
        {W1: 0, W2: 0}, to_block=99, on_chunk=keep
    )

    [chunk] = chunks
    assert (chunk.from_block, chunk.to_block, chunk.cursors) == (0, 99, {W1: 100, W2: 100})
    assert chunk.block_times == {15: block_time(15), 20: block_time(20)}
    assert sorted(node.block_reads) == [15, 20]
    assert [(a.block_number, a.log_index) for a in chunk.approvals] == [
        (10, 0),
        (15, 0),
        (20, 3),
        (20, 4),
    ]


async def test_a_logs_block_timestamp_dates_it_without_reading_the_block() -> None:
    stamped = approval(W1, 10) | {"blockTimestamp": hex(block_time(10))}
    garbage = approval(W1, 30, token=TK2) | {"blockTimestamp": "soon"}
    node = FakeNode([stamped, approval(W1, 20, spender=S2), garbage])
    chunks: list[ScanChunk] = []

    async def keep(chunk: ScanChunk) -> None:
        chunks.append(chunk)

    await ApprovalScanner(node, chain_id=1, max_block_range=100).scan(
        {W1: 0}, to_block=99, on_chunk=keep
    )

    [chunk] = chunks
    assert chunk.block_times == {10: block_time(10), 20: block_time(20), 30: block_time(30)}
    assert sorted(node.block_reads) == [20, 30]  # no timestamp, a garbled one: read


async def test_logs_that_all_carry_their_timestamp_need_no_block_read() -> None:
    logs = [
        approval(W1, b, token=t) | {"blockTimestamp": hex(block_time(b))}
        for b, t in ((5, TK1), (50, TK2), (50, TK1))
    ]
    node = FakeNode(logs)

    result = await ApprovalScanner(node, chain_id=1, max_block_range=100).scan({W1: 0}, to_block=99)

    assert node.block_reads == []
    assert result.requests == 1


# -- progress --------------------------------------------------------------------------------


async def test_progress_is_reported_per_range_with_an_eta_and_logged_every_10_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]

    def three_seconds_pass() -> None:
        now[0] += 3.0

    node = FakeNode([], on_request=three_seconds_pass)
    reports: list[ScanProgress] = []
    scanner = ApprovalScanner(
        node, chain_id=10, max_block_range=100, clock=lambda: now[0], on_progress=reports.append
    )

    with caplog.at_level(logging.INFO, logger="monitor.chain.discovery"):
        await scanner.scan({W1: 1000}, to_block=1999)

    assert [(r.chain_id, r.done_blocks, r.total_blocks) for r in reports] == [
        (10, done, 1000) for done in range(0, 1001, 100)
    ]
    assert reports[0].eta_s is None
    assert reports[1].eta_s == pytest.approx(27.0)  # 3 s for 100 blocks, 900 to go
    assert reports[-1].eta_s == 0
    assert [r.getMessage() for r in caplog.records] == [
        "chain 10: discovery scanned 400 of 1000 blocks (40.0%), about 18s left",
        "chain 10: discovery scanned 800 of 1000 blocks (80.0%), about 6s left",
        "chain 10: discovery scanned all 1000 blocks in 30s",
    ]


async def test_a_short_scan_logs_nothing_at_info(caplog: pytest.LogCaptureFixture) -> None:
    scanner = ApprovalScanner(FakeNode([]), chain_id=1, max_block_range=100, clock=lambda: 0.0)

    with caplog.at_level(logging.INFO, logger="monitor.chain.discovery"):
        await scanner.scan({W1: 0}, to_block=999)

    assert caplog.records == []


# -- with the store --------------------------------------------------------------------------


async def test_chunks_saved_in_the_store_resume_an_interrupted_scan(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'discovery.sqlite'}")
    await migrate.upgrade(engine)
    try:
        store = SqlDiscoveryStore(engine)
        logs = [
            approval(W1, 50),
            approval(W1, 250, nft=True),
            approval(W1, 350),
            approval(W2, 420, spender=S2),
        ]

        class Interrupted(Exception):
            pass

        async def save_then_stop_at_300(chunk: ScanChunk) -> None:
            await save(chunk)
            if chunk.to_block >= 299:
                raise Interrupted

        async def save(chunk: ScanChunk) -> None:
            await store.save_chunk(
                1,
                cursors=chunk.cursors,
                approvals=chunk.approvals,
                block_times=chunk.block_times,
                nft_approvals=chunk.nft_approvals,
            )

        first = FakeNode(logs)
        with pytest.raises(Interrupted):
            await ApprovalScanner(first, chain_id=1, max_block_range=100).scan(
                await store.cursors(1, [W1], start_block=0),
                to_block=499,
                on_chunk=save_then_stop_at_300,
            )
        second = FakeNode(logs)
        cursors = await store.cursors(1, [W1, W2], start_block=0)  # W2 added meanwhile
        assert cursors == {W1: 300, W2: 0}
        await ApprovalScanner(second, chain_id=1, max_block_range=100).scan(
            cursors, to_block=499, on_chunk=save
        )

        assert second.asked == [
            Asked(0, 99, (W2,)),
            Asked(100, 199, (W2,)),
            Asked(200, 299, (W2,)),
            Asked(300, 399, (W1, W2)),
            Asked(400, 499, (W1, W2)),
        ]
        found = await store.discovered(1)
        assert [(d.wallet, d.spender, d.last_block) for d in found] == [
            (W1, S1, 350),
            (W2, S2, 420),
        ]
        assert found[0].first_block == 50
        assert found[0].last_approved_at.timestamp() == block_time(350)
        assert await store.nft_approvals(1) == 1
        assert await store.cursors(1, [W1, W2], start_block=0) == {W1: 500, W2: 500}
    finally:
        await engine.dispose()


# -- on a real node --------------------------------------------------------------------------

node = anvil_fixture()


@contextlib.asynccontextmanager
async def refusing_proxy(
    upstream: str, session: aiohttp.ClientSession, *, max_blocks: int, asked: list[tuple[int, int]]
) -> AsyncIterator[str]:
    """A JSON-RPC proxy in front of ``upstream`` that answers an eth_getLogs over more than
    ``max_blocks`` blocks as Alchemy does, and records every eth_getLogs range it is asked."""

    def refusal(call: dict[str, Any]) -> dict[str, Any] | None:
        if call.get("method") != "eth_getLogs":
            return None
        query = call["params"][0]
        start, end = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        asked.append((start, end))
        if end - start + 1 <= max_blocks:
            return None
        return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32602, "message": ALCHEMY}}

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        calls = body if isinstance(body, list) else [body]
        refused = [refusal(call) for call in calls]
        if not isinstance(body, list) and refused[0] is not None:
            return web.json_response(refused[0])
        async with session.post(upstream, json=body) as answer:
            return web.json_response(await answer.json())

    app = web.Application()
    app.router.add_post("/{key}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/secret-key"
    finally:
        await server.close()


async def test_a_scan_of_a_real_node_behind_a_range_refusing_proxy(node: Anvil) -> None:
    owner, spender, stranger, other_spender = node.accounts[:4]
    token = node.deploy("TestToken", "Test", "TST", 18)
    nft = node.deploy("TestNft")
    node.send(owner, token, "approve(address,uint256)", spender, 5)
    node.send(stranger, token, "approve(address,uint256)", spender, 9)  # not watched
    node.mine(150)
    node.send(owner, nft, "mint(address,uint256)", owner, 1)
    node.send(owner, nft, "approve(address,uint256)", spender, 1)
    node.send(owner, token, "approve(address,uint256)", other_spender, 2**256 - 1)
    node.mine(20)
    head = node.block_number()
    asked: list[tuple[int, int]] = []

    async with (
        aiohttp.ClientSession() as session,
        refusing_proxy(node.url, session, max_blocks=64, asked=asked) as url,
    ):
        rpc = ChainRpc(
            session,
            RpcEndpoint(chain_id=1, url=url, origin="test"),
            limiter=RateLimiter(1000),
            max_attempts=1,
        )
        scanner = ApprovalScanner(rpc, chain_id=1, max_block_range=1000)
        chunks: list[ScanChunk] = []

        async def keep(chunk: ScanChunk) -> None:
            chunks.append(chunk)

        first = await scanner.scan({owner: 0}, to_block=head - 10, on_chunk=keep)

        assert [(a.owner, a.token, a.spender) for a in first.approvals] == [
            (owner, token, spender),
            (owner, token, other_spender),
        ]
        assert first.nft_approvals == 1
        assert first.cursors == {owner: head - 9}
        times = {b: t for chunk in chunks for b, t in chunk.block_times.items()}
        assert times == {
            a.block_number: node.block_timestamp(a.block_number) for a in first.approvals
        }
        assert asked[0] == (0, head - 10)  # refused: more than 64 blocks
        answered = sorted((a, b) for a, b in asked if b - a + 1 <= 64)
        assert answered[0][0] == 0
        assert answered[-1][1] == head - 10
        assert all(nxt[0] == prev[1] + 1 for prev, nxt in itertools.pairwise(answered))

        node.send(owner, token, "approve(address,uint256)", spender, 0)  # a revoke is a log too
        asked.clear()
        second = await scanner.scan(first.cursors, to_block=node.block_number())

    assert min(start for start, _ in asked) == head - 9
    assert [(a.spender, a.value, a.block_number) for a in second.approvals] == [
        (spender, 0, node.block_number())
    ]
