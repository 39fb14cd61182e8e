"""Discovery: find the ERC-20 approvals of the watched wallets in a chain's ``Approval`` logs.

``ApprovalScanner.scan`` reads ``eth_getLogs`` with topic0 = ``Approval`` and topic1 = an
OR-list of wallets, from each wallet's cursor (the next block to scan) up to a block the
caller chose (head minus confirmations: live reads, not logs, are the truth, and a log
undone by a reorg can at worst name a pair whose live allowance reads zero).

- Wallets that share a cursor are asked together, ``wallets_per_query`` to a query. A wallet
  behind the others (added to the config later) is scanned alone from its cursor until it
  reaches theirs; from there on it joins them. No block below a wallet's cursor is asked for.
- Ranges adapt: the first is ``max_block_range`` blocks; when the provider refuses a range
  or the size of its answer (``is_range_refusal``) the range halves, down to one block; after
  an answer well below the providers' result caps it doubles again, up to the largest range
  the provider has not refused after small answers (a provider's own range cap). A refusal
  that names the range the provider allows (Alchemy's "up to a 2K block range" and its
  suggested ``[from, to]``, "exceed maximum block range: 5000", "limited to a 10,000 range")
  sets the range, and for a range cap its ceiling, to that at once (never above
  ``max_block_range``).
- Each scanned range is a ``ScanChunk`` handed to ``on_chunk`` before the scan goes on, so
  the caller saves approvals and cursors together and an interrupted scan resumes where it
  stopped.
- A block's time is read from the log's ``blockTimestamp`` where the node adds it (newer
  geth, anvil, Alchemy), else with ``eth_getBlockByNumber``, batched.
- Logs a reorg removed (``removed: true``) are ignored, as are logs whose owner is not a
  wallet asked for. ERC-721 approvals (four topics) are counted, not returned.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.chain.abi import (
    APPROVAL_TOPIC0,
    ApprovalLog,
    decode_approval_log,
    is_nft_approval,
    topic_for_address,
)
from monitor.chain.rpc import _snippet, decode_quantity
from monitor.errors import BadResponse, RateLimited, Unavailable, UpstreamError

logger = logging.getLogger(__name__)

PROGRESS_LOG_INTERVAL_S = 10.0
"""A long scan logs its progress at INFO at most this often."""

GROW_BELOW_LOGS = 2_000
"""An answer with fewer logs than this (a fifth of the common 10,000-log cap) lets the next
range double."""

_RANGE_TEXT = re.compile(
    r"block range|range (is )?too (wide|large|big)|max(imum)? (block )?range|range limit"
    r"|limited to a [\d,]+|more than [\d,]+ (results|logs|blocks)|response size"
    r"|too many (results|logs|blocks)|max(imum)? results|results? (limit|cap|size)"
    r"|logs? (limit|cap)|query exceeds",
    re.IGNORECASE,
)
"""How providers word a refused ``eth_getLogs`` range or result size: Alchemy's "Log response
size exceeded", Infura's "query returned more than 10000 results", "block range is too
wide", "exceed maximum block range: 5000", QuickNode's "eth_getLogs is limited to a 10,000
range", "query exceeds max results 20000", ..."""

_NOT_RANGE_TEXT = re.compile(
    r"rate|per second|too many requests|credits|capacity|quota|daily", re.IGNORECASE
)
"""Limits that are about request rates, not ranges: halving the range cannot help."""


_NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+)(?![\d.,]*\d)(?![xX])\s*([kKmM](?![a-zA-Z]))?"
"""A decimal count of blocks (``2000``, ``10,000``, ``2K``), not the start of a hex number."""

_RANGE_CAP_TEXTS = (
    re.compile(r"up to an? " + _NUMBER + r"\s*-?\s*block range", re.IGNORECASE),
    re.compile(r"limited to an? " + _NUMBER + r"\s*(?:-?\s*blocks?)?\s*range", re.IGNORECASE),
    re.compile(
        r"(?:max(?:imum)?|allowed) (?:block )?range(?: is| of)?\s*[:=]?\s*" + _NUMBER,
        re.IGNORECASE,
    ),
    re.compile(
        r"block range (?:is limited to|cannot exceed|should not exceed|must not exceed|"
        r"must be (?:at most|less than or equal to)|limit(?: is)?\s*:?)\s*" + _NUMBER,
        re.IGNORECASE,
    ),
)
"""How providers name the block range they allow: Alchemy's "up to a 2K block range",
QuickNode's "eth_getLogs is limited to a 10,000 range" and "limited to a 10000 block range",
"exceed maximum block range: 5000", "block range is limited to 1000"."""

_SUGGESTED_RANGE = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*,\s*(0x[0-9a-fA-F]+)\s*\]")
"""The range a provider suggests for the same query (Alchemy's "this block range should work:
[0x.., 0x..]", Infura's "Try with this block range [0x.., 0x..]")."""

_MULTIPLIERS = {"": 1, "k": 1_000, "m": 1_000_000}


def allowed_range(text: str) -> tuple[int | None, int | None]:
    """What a refusal's text says the provider allows: (the block range it caps queries at,
    the span of the range it suggests for this query), each None when the text does not say.
    """
    cap = None
    for pattern in _RANGE_CAP_TEXTS:
        match = pattern.search(text)
        if match is not None:
            digits, unit = match.group(1), (match.group(2) or "").lower()
            cap = int(digits.replace(",", "")) * _MULTIPLIERS[unit] or None
            break
    suggested = None
    pair = _SUGGESTED_RANGE.search(text)
    if pair is not None:
        first, last = int(pair.group(1), 16), int(pair.group(2), 16)
        suggested = last - first + 1 if last >= first else None
    return cap, suggested


def is_range_refusal(exc: BaseException) -> bool:
    """True when ``exc`` is a provider refusing an ``eth_getLogs`` block range or the size of
    its answer, so that a smaller range may succeed.

    A JSON-RPC error object (``RpcError``, whatever its code: -32005, -32602, -32600 and
    others are in use) counts when its message speaks of the range or of a cap on the
    results; so does an HTTP 400 or 413 (``Rejected``, ``BadResponse``) whose body does. A
    rate limit ("request rate limited", "too many requests") does not.
    """
    if not isinstance(exc, UpstreamError) or isinstance(exc, RateLimited | Unavailable):
        return False
    return _speaks_of_range(_refusal_text(exc))


def _refusal_text(exc: UpstreamError) -> str:
    return str(getattr(exc, "rpc_message", None) or exc.problem)


def _speaks_of_range(text: str) -> bool:
    return bool(_RANGE_TEXT.search(text)) and not _NOT_RANGE_TEXT.search(text)


class LogRangeRefused(UpstreamError):
    """The provider refuses the logs of a single block: no smaller range is left to try."""

    def __init__(self, *, chain_id: int, block: int, cause: BaseException) -> None:
        self.chain_id = chain_id
        self.block = block
        super().__init__(
            f"chain {chain_id}: the node refuses the Approval logs of block {block} even "
            f"alone ({cause}); use an RPC endpoint without this limit",
            endpoint="eth_getLogs",
        )


class LogReader(Protocol):
    """What the scanner needs of ``monitor.chain.rpc.ChainRpc``."""

    async def get_logs(
        self, *, from_block: int, to_block: int, topics: Sequence[str | Sequence[str] | None]
    ) -> list[dict[str, Any]]: ...

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]: ...

    async def block_timestamp(self, number: int) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanProgress:
    """How far a scan has come: blocks done of the blocks it spans, and an estimate of the
    seconds left from the rate so far (None before the first range)."""

    chain_id: int
    done_blocks: int
    total_blocks: int
    eta_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanChunk:
    """One scanned block range (``from_block`` to ``to_block``, inclusive) for the wallets in
    ``cursors``, which maps each to its next block to scan (``to_block + 1``)."""

    chain_id: int
    from_block: int
    to_block: int
    approvals: tuple[ApprovalLog, ...]
    """The range's ERC-20 ``Approval`` logs of those wallets, by block and log index."""
    nft_approvals: int
    cursors: dict[str, int]
    block_times: dict[int, int]
    """Unix seconds of the block of each (wallet, token, spender)'s newest approval here."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult:
    """A whole scan: every approval found, and each wallet's cursor after it."""

    approvals: list[ApprovalLog]
    nft_approvals: int
    cursors: dict[str, int]
    """Every wallet handed to the scan: its next block to scan (never below what it was)."""
    requests: int
    """JSON-RPC calls made: ``eth_getLogs`` (refused ones too) and block reads."""


@dataclass(slots=True)
class _Fetched:
    from_block: int
    to_block: int
    logs: list[dict[str, Any]] = field(default_factory=list)


class ApprovalScanner:
    """Scans one chain's ``Approval`` logs for the watched wallets (see the module's notes).

    Keep one per chain: the range sizes it has learned carry over from one scan to the next.
    """

    def __init__(
        self,
        rpc: LogReader,
        *,
        chain_id: int,
        max_block_range: int = 10_000,
        wallets_per_query: int = 100,
        grow_below_logs: int = GROW_BELOW_LOGS,
        clock: Callable[[], float] = time.monotonic,
        on_progress: Callable[[ScanProgress], None] | None = None,
        progress_log_interval_s: float = PROGRESS_LOG_INTERVAL_S,
    ) -> None:
        if max_block_range < 1:
            raise ValueError(f"max_block_range must be at least 1, got {max_block_range}")
        if wallets_per_query < 1:
            raise ValueError(f"wallets_per_query must be at least 1, got {wallets_per_query}")
        self._rpc = rpc
        self._chain_id = chain_id
        self._max_range = max_block_range
        self._per_query = wallets_per_query
        self._grow_below = grow_below_logs
        self._clock = clock
        self._on_progress = on_progress
        self._log_interval_s = progress_log_interval_s
        self._range = max_block_range
        self._ceiling = max_block_range
        self._last_small_span: int | None = None
        self._requests = 0

    @property
    def block_range(self) -> int:
        """The range the next ``eth_getLogs`` will ask for at most."""
        return self._range

    async def scan(
        self,
        cursors: Mapping[str, int],
        *,
        to_block: int,
        on_chunk: Callable[[ScanChunk], Awaitable[None]] | None = None,
    ) -> ScanResult:
        """Scan every wallet of ``cursors`` (wallet -> next block to scan) up to ``to_block``
        inclusive. ``on_chunk`` is awaited after each range, before the next one is asked
        for; if it raises, the scan stops there.

        Raises ``LogRangeRefused`` when the node refuses even a single block, and whatever
        the RPC client raises for other failures.
        """
        requests_before = self._requests
        next_block = {wallet.lower(): block for wallet, block in cursors.items()}
        pending = {w: b for w, b in next_block.items() if b <= to_block}
        found: list[ApprovalLog] = []
        nft_approvals = 0
        if not pending:
            return ScanResult(approvals=found, nft_approvals=0, cursors=next_block, requests=0)
        first = min(pending.values())
        progress = _ProgressReport(
            self._chain_id,
            first,
            to_block,
            self._clock,
            self._on_progress,
            self._log_interval_s,
        )
        position = first
        while position <= to_block:
            # Every pending wallet is at ``position`` or ahead of it; those at it go together
            # until the next wallet's cursor, where that wallet joins them.
            active = sorted(w for w, b in pending.items() if b == position)
            ahead = [b for b in pending.values() if b > position]
            limit = min(ahead) - 1 if ahead else to_block
            queries = [
                active[i : i + self._per_query] for i in range(0, len(active), self._per_query)
            ]
            fetched: dict[int, _Fetched] = {}
            while position <= limit:
                end, answers = await self._fetch(queries, position, limit, fetched)
                chunk = await self._chunk(queries, answers, position, end)
                for wallet in active:
                    pending[wallet] = next_block[wallet] = end + 1
                found.extend(chunk.approvals)
                nft_approvals += chunk.nft_approvals
                if on_chunk is not None:
                    await on_chunk(chunk)
                position = end + 1
                progress.advanced(position)
        progress.finished()
        return ScanResult(
            approvals=found,
            nft_approvals=nft_approvals,
            cursors=next_block,
            requests=self._requests - requests_before,
        )

    async def _fetch(
        self,
        queries: list[list[str]],
        start: int,
        limit: int,
        fetched: dict[int, _Fetched],
    ) -> tuple[int, list[list[dict[str, Any]]]]:
        """The logs of each query from ``start`` to the end of the largest range the node
        accepts (at most ``limit``). ``fetched`` keeps each query's last answer, so that a
        range halved because of another query is served from it without asking again."""
        while True:
            end = min(start + self._range - 1, limit)
            answers: list[list[dict[str, Any]]] = []
            try:
                for index, wallets in enumerate(queries):
                    held = fetched.get(index)
                    if held is None or held.from_block > start or held.to_block < end:
                        held = fetched[index] = _Fetched(
                            start, end, await self._get_logs(wallets, start, end)
                        )
                    answers.append([log for log in held.logs if start <= _block_of(log) <= end])
            except UpstreamError as exc:
                if not is_range_refusal(exc):
                    raise
                if end == start:
                    raise LogRangeRefused(chain_id=self._chain_id, block=start, cause=exc) from exc
                self._refused(end - start + 1, _refusal_text(exc))
                continue
            self._answered(end - start + 1, max(len(a) for a in answers))
            return end, answers

    async def _get_logs(self, wallets: list[str], start: int, end: int) -> list[dict[str, Any]]:
        self._requests += 1
        return await self._rpc.get_logs(
            from_block=start,
            to_block=end,
            topics=[APPROVAL_TOPIC0, [topic_for_address(w) for w in wallets]],
        )

    def _refused(self, span: int, text: str) -> None:
        cap, suggested = allowed_range(text)
        if cap is not None and cap >= span:
            cap = None  # refused at or under what it names: the text is about something else
        if suggested is not None and suggested >= span:
            suggested = None
        # Refused just after a small answer at half the range or less: the provider caps the
        # range itself, whatever the logs in it. Stop growing past what it accepted.
        capped = self._last_small_span is not None and span <= 2 * self._last_small_span
        if cap is not None:  # the provider's own cap: the range, and no growing past it
            self._ceiling = min(cap, self._max_range)
            self._range = min(cap, suggested or cap, self._max_range)
        elif suggested is not None:  # a range that works for this query
            self._range = min(suggested, self._max_range)
            if capped:
                self._ceiling = max(self._range, span // 2)
        else:
            if capped:
                self._ceiling = max(1, span // 2)
            self._range = max(1, span // 2)
        self._last_small_span = None
        logger.debug(
            "chain %d: eth_getLogs range of %d blocks refused, next %d",
            self._chain_id,
            span,
            self._range,
        )

    def _answered(self, span: int, most_logs: int) -> None:
        if most_logs >= self._grow_below:
            self._last_small_span = None
            return
        self._last_small_span = span
        if span == self._range:
            self._range = min(self._range * 2, self._ceiling)

    async def _chunk(
        self,
        queries: list[list[str]],
        answers: list[list[dict[str, Any]]],
        start: int,
        end: int,
    ) -> ScanChunk:
        approvals: list[ApprovalLog] = []
        nft_approvals = 0
        stamped: dict[int, int] = {}
        for wallets, logs in zip(queries, answers, strict=True):
            asked = set(wallets)
            for log in logs:
                if log.get("removed") is True:
                    continue
                stamp = _log_timestamp(log)
                if stamp is not None:
                    stamped[_block_of(log)] = stamp
                if is_nft_approval(log):
                    if _owner_topic(log) in asked:
                        nft_approvals += 1
                    continue
                approval = decode_approval_log(log)
                if approval is None or approval.removed or approval.owner.lower() not in asked:
                    continue
                approvals.append(approval)
        approvals.sort(key=lambda a: (a.block_number, a.log_index))
        newest: dict[tuple[str, str, str], int] = {}
        for a in approvals:
            newest[(a.owner, a.token, a.spender)] = a.block_number
        blocks = set(newest.values())
        block_times = {b: stamped[b] for b in blocks if b in stamped}
        block_times.update(await self._block_times(sorted(blocks - stamped.keys())))
        return ScanChunk(
            chain_id=self._chain_id,
            from_block=start,
            to_block=end,
            approvals=tuple(approvals),
            nft_approvals=nft_approvals,
            cursors={w: end + 1 for ws in queries for w in ws},
            block_times=block_times,
        )

    async def _block_times(self, blocks: list[int]) -> dict[int, int]:
        if not blocks:
            return {}
        if len(blocks) == 1:
            self._requests += 1
            stamp = await self._rpc.block_timestamp(blocks[0])
            return {blocks[0]: _checked_timestamp(self._chain_id, blocks[0], stamp)}
        self._requests += len(blocks)
        answers = await self._rpc.batch([("eth_getBlockByNumber", [hex(b), False]) for b in blocks])
        times: dict[int, int] = {}
        for block, answer in zip(blocks, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            try:
                stamp = int(answer["timestamp"], 16)
            except (TypeError, KeyError, ValueError) as exc:
                raise BadResponse(
                    f"chain {self._chain_id}: block {block} has no readable timestamp",
                    endpoint="eth_getBlockByNumber",
                ) from exc
            times[block] = _checked_timestamp(self._chain_id, block, stamp)
        return times


class _ProgressReport:
    """Reports a scan's progress to ``on_progress`` after each range, and logs it at INFO at
    most once per ``interval_s`` (and once at the end, if it logged before)."""

    def __init__(
        self,
        chain_id: int,
        first: int,
        last: int,
        clock: Callable[[], float],
        on_progress: Callable[[ScanProgress], None] | None,
        interval_s: float,
    ) -> None:
        self._chain_id = chain_id
        self._first = first
        self._total = last - first + 1
        self._clock = clock
        self._on_progress = on_progress
        self._interval_s = interval_s
        self._started = self._logged = clock()
        self._logged_any = False
        self._report(0, None)

    def advanced(self, position: int) -> None:
        done = position - self._first
        now = self._clock()
        elapsed = now - self._started
        eta_s = elapsed / done * (self._total - done) if done > 0 else None
        self._report(done, eta_s)
        if now - self._logged >= self._interval_s and done < self._total:
            self._logged, self._logged_any = now, True
            logger.info(
                "chain %d: discovery scanned %d of %d blocks (%.1f%%), about %s left",
                self._chain_id,
                done,
                self._total,
                100.0 * done / self._total,
                _duration(eta_s),
            )

    def finished(self) -> None:
        if self._logged_any:
            logger.info(
                "chain %d: discovery scanned all %d blocks in %s",
                self._chain_id,
                self._total,
                _duration(self._clock() - self._started),
            )

    def _report(self, done: int, eta_s: float | None) -> None:
        if self._on_progress is not None:
            self._on_progress(
                ScanProgress(
                    chain_id=self._chain_id,
                    done_blocks=done,
                    total_blocks=self._total,
                    eta_s=eta_s,
                )
            )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}min"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}min"


MAX_BLOCK_TIMESTAMP = 2**40
"""A block time past this (year 36812) is no block time: a node sending one is broken, and a
datetime could not even hold it (a millisecond timestamp would be read as year 55840)."""


def _checked_timestamp(chain_id: int, block: int, stamp: int) -> int:
    if not 0 <= stamp <= MAX_BLOCK_TIMESTAMP:
        raise BadResponse(
            f"chain {chain_id}: block {block} has the timestamp {_snippet(stamp)}, not unix "
            "seconds",
            endpoint="eth_getBlockByNumber",
        )
    return stamp


def _block_of(log: Mapping[str, Any]) -> int:
    number = log.get("blockNumber")
    try:
        return int(number, 16)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadResponse(
            f"a log without a readable block number: {_snippet(number)}", endpoint="eth_getLogs"
        ) from None


def _log_timestamp(log: Mapping[str, Any]) -> int | None:
    """The log's ``blockTimestamp`` (a hex quantity, unix seconds) where the node adds it;
    None where it does not, or sends something else."""
    value = log.get("blockTimestamp")
    if not isinstance(value, str):
        return None
    try:
        stamp = decode_quantity(value)
    except ValueError:
        return None
    return stamp if 0 <= stamp <= MAX_BLOCK_TIMESTAMP else None


def _owner_topic(log: Mapping[str, Any]) -> str:
    topics = log.get("topics") or []
    return "0x" + str(topics[1])[-40:].lower() if len(topics) > 1 else ""
