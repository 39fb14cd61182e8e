"""One poll: every (chain, spender, wallet batch) through the aggregated endpoint, and every
configured custom token through the per-wallet POST endpoint.

Each request becomes a ``BatchOutcome``. A failed batch is recorded as failed, never as
empty: the caller must not read the absence of its positions as zeros.

A failed batch is logged (warning) one line each, except batches failed by an unreachable host
(``HostUnreachable``: its breaker is open): those make one line per host and poll, so a dead
upstream costs a line, not one per batch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from monitor.config import ChainConfig, Config
from monitor.domain.model import BatchOutcome, PollResult, Position, Token
from monitor.errors import HostUnreachable, UpstreamError
from monitor.oneinch.client import BalanceClient
from monitor.oneinch.parse import AggregatedToken
from monitor.ports import Clock, utc_now

log = logging.getLogger(__name__)


def batched(items: Sequence[str], size: int) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def _keep(position: Position) -> bool:
    """Drop what ``filterEmpty`` would drop: nothing held and nothing approved.

    The native coin's "allowance" is a 2^256-1 placeholder, so only its balance counts.
    """
    if position.token.is_native:
        return position.balance > 0
    return position.balance > 0 or position.allowance > 0


BatchKey = tuple[int, str, tuple[str, ...]]
"""(chain_id, spender, wallets) of an aggregated request."""
Answer = tuple[AggregatedToken, ...]
"""An aggregated answer, parsed."""


@dataclass(frozen=True, slots=True)
class Built:
    """What one aggregated answer made: its digest, its positions, the tokens it left
    unobserved (wallets null) and the tokens it returned."""

    digest: bytes
    positions: tuple[Position, ...]
    unobserved: frozenset[str]
    returned: frozenset[str]


class PollMemo:
    """What the polls of one source remember, so that an unchanged answer costs next to
    nothing: per aggregated request, what its latest answer made (``Built``), kept with that
    answer's digest. An answer byte for byte the same (the same digest) is neither parsed
    nor built again; the parsed answer itself is not kept (it was half of the objects a
    poll held)."""

    def __init__(self) -> None:
        self.built: dict[BatchKey, Built] = {}
        """Per (chain_id, spender, wallets)."""


async def poll_once(
    client: BalanceClient,
    config: Config,
    *,
    clock: Clock = utc_now,
    max_concurrent_requests: int = 4,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[BatchOutcome], None] | None = None,
    foreign_tokens: Callable[[int, str], frozenset[str]] | None = None,
    memo: PollMemo | None = None,
) -> PollResult:
    """Poll everything ``config`` watches once. Never raises for upstream failures.

    ``foreign_tokens(chain_id, spender)``: tokens another source reads for that spender
    (the chain reader's discovered ones). An aggregated answer that does not return such a
    token does not vouch for it (1inch may not list it, and its silence would read as a
    revoke): its batch leaves it out of its coverage.

    ``on_start`` is told how many batches (requests, retries aside) the poll will make
    before the first starts, and ``on_batch`` is handed each batch's outcome as it finishes,
    failed or not, in completion order (a progress bar's hooks; both run on the event loop,
    so keep them quick).

    ``memo``: what earlier polls of the same source answered (``PollMemo``); None: nothing
    is remembered.
    """
    started_at = clock()
    gate = asyncio.Semaphore(max_concurrent_requests)
    unreachable: dict[str, list[HostUnreachable]] = {}

    async def gated(job: Callable[[], Awaitable[BatchOutcome]]) -> BatchOutcome:
        async with gate:
            outcome = await job()
        if on_batch is not None:
            on_batch(outcome)
        return outcome

    # Factories, not coroutines: a poll cancelled half-way leaves no coroutine never awaited.
    jobs: list[Callable[[], Awaitable[BatchOutcome]]] = []
    for chain in config.chains:
        wallets = [w.address for w in config.wallets_on(chain.id)]
        if not wallets:
            continue
        for spender in chain.spenders:
            for batch in batched(wallets, config.api.max_wallets_per_request):
                jobs.append(
                    functools.partial(
                        _aggregated_batch,
                        client,
                        chain.id,
                        spender.address,
                        batch,
                        config.api.filter_empty,
                        frozenset(chain.custom_token_addresses),
                        unreachable,
                        foreign_tokens(chain.id, spender.address)
                        if foreign_tokens is not None
                        else frozenset(),
                        memo,
                    )
                )
            if chain.custom_tokens:
                jobs.extend(
                    functools.partial(
                        _custom_batch, client, chain, spender.address, wallet, unreachable
                    )
                    for wallet in wallets
                )
    if on_start is not None:
        on_start(len(jobs))
    batches = await asyncio.gather(*(gated(job) for job in jobs))
    for origin, errors in unreachable.items():
        last = errors[-1]
        log.warning(
            "%d of %d batches not polled: %s unreachable (%s, %d times in a row, no answer since)",
            len(errors),
            len(jobs),
            origin,
            last.cause,
            last.failures,
        )
    return PollResult(started_at=started_at, finished_at=clock(), batches=tuple(batches))


async def _aggregated_batch(
    client: BalanceClient,
    chain_id: int,
    spender: str,
    wallets: tuple[str, ...],
    filter_empty: bool,
    custom_tokens: frozenset[str],
    unreachable: dict[str, list[HostUnreachable]],
    foreign: frozenset[str] = frozenset(),
    memo: PollMemo | None = None,
) -> BatchOutcome:
    key = (chain_id, spender, wallets)
    known = memo.built.get(key) if memo is not None else None
    try:
        reply = await client.aggregated_if_changed(
            chain_id,
            spender,
            wallets,
            filter_empty=filter_empty,
            last_digest=known.digest if known is not None else None,
        )
    except UpstreamError as exc:
        return _failed(
            chain_id, spender, wallets, "aggregated", exc, None, custom_tokens, unreachable
        )
    if reply.value is None and known is not None:
        built = known  # the same bytes as the answer that made it
    else:
        assert reply.value is not None and reply.digest is not None  # parsed, digested
        built = Built(
            digest=reply.digest,
            positions=_positions(chain_id, spender, wallets, reply.value),
            # A token whose wallets came back null was not observed: leave it out of the
            # coverage, so that its values stand instead of being read as zeros.
            unobserved=frozenset(e.token.address for e in reply.value if not e.wallets_known),
            returned=frozenset(e.token.address for e in reply.value),
        )
        if memo is not None:
            memo.built[key] = built
    return BatchOutcome(
        chain_id=chain_id,
        spender=spender,
        wallets=wallets,
        kind="aggregated",
        except_tokens=custom_tokens | built.unobserved | (foreign - built.returned),
        positions=built.positions,
        request_id=reply.request_id,
        answer_digest=built.digest if memo is not None else None,
    )


def _positions(
    chain_id: int, spender: str, wallets: tuple[str, ...], answer: Answer
) -> tuple[Position, ...]:
    """The positions of one aggregated answer."""
    asked = frozenset(wallets)
    # The hot loop of a poll, once per (token, wallet) of the answer: ``_keep`` is inlined, and
    # the wallet strings are the config's own (the client maps every spelling of an asked
    # wallet to it), so the snapshot's keys share them.
    positions: list[Position] = []
    keep = positions.append
    for entry in answer:
        token = entry.token
        native = token.is_native
        for wallet, amounts in entry.wallets.items():
            if wallet not in asked:
                continue
            balance, allowance = amounts.balance, amounts.allowance
            if balance > 0 or (allowance > 0 and not native):
                keep(
                    Position(
                        chain_id=chain_id,
                        wallet=wallet,
                        spender=spender,
                        token=token,
                        balance=balance,
                        allowance=allowance,
                    )
                )
    return tuple(positions)


async def _custom_batch(
    client: BalanceClient,
    chain: ChainConfig,
    spender: str,
    wallet: str,
    unreachable: dict[str, list[HostUnreachable]],
) -> BatchOutcome:
    try:
        reply = await client.custom_allowances_and_balances(
            chain.id, spender, wallet, chain.custom_token_addresses
        )
    except UpstreamError as exc:
        asked = frozenset(chain.custom_token_addresses)
        return _failed(chain.id, spender, (wallet,), "custom", exc, asked, frozenset(), unreachable)
    positions = []
    # Only the tokens asked for: 1inch may add the native coin to custom answers unasked.
    for custom in chain.custom_tokens:
        amounts = reply.value.get(custom.address)
        if amounts is None:
            continue
        token = Token(
            chain_id=chain.id,
            address=custom.address,
            symbol=custom.symbol or "",
            name="",
            decimals=custom.decimals,
        )
        positions.append(
            Position(
                chain_id=chain.id,
                wallet=wallet,
                spender=spender,
                token=token,
                balance=amounts.balance,
                allowance=amounts.allowance,
            )
        )
    return BatchOutcome(
        chain_id=chain.id,
        spender=spender,
        wallets=(wallet,),
        kind="custom",
        tokens=frozenset(chain.custom_token_addresses),
        positions=tuple(p for p in positions if _keep(p)),
        request_id=reply.request_id,
    )


def _failed(
    chain_id: int,
    spender: str,
    wallets: tuple[str, ...],
    kind: str,
    exc: UpstreamError,
    tokens: frozenset[str] | None,
    except_tokens: frozenset[str],
    unreachable: dict[str, list[HostUnreachable]],
) -> BatchOutcome:
    if isinstance(exc, HostUnreachable):
        unreachable.setdefault(exc.origin, []).append(exc)  # one line per host, at the end
        level = logging.DEBUG
    else:
        level = logging.WARNING
    log.log(
        level,
        "poll of chain %s spender %s (%d wallets) failed: %s",
        chain_id,
        spender,
        len(wallets),
        exc,
    )
    return BatchOutcome(
        chain_id=chain_id,
        spender=spender,
        wallets=wallets,
        kind=kind,
        tokens=tokens,
        except_tokens=except_tokens,
        request_id=exc.request_id,
        error=str(exc),
        error_reason=exc.reason,
    )


class OneInchPositions:
    """The 1inch Balance API as a ``PositionSource`` (``monitor.ports``): each poll is
    ``poll_once`` over everything ``config`` watches."""

    def __init__(
        self,
        client: BalanceClient,
        config: Config,
        *,
        clock: Clock = utc_now,
        foreign_tokens: Callable[[int, str], frozenset[str]] | None = None,
    ) -> None:
        """``foreign_tokens``: see ``poll_once``."""
        self._client = client
        self._config = config
        self._clock = clock
        self._foreign_tokens = foreign_tokens
        self._memo = PollMemo()

    async def poll(
        self,
        *,
        on_start: Callable[[int], None] | None = None,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> PollResult:
        return await poll_once(
            self._client,
            self._config,
            clock=self._clock,
            on_start=on_start,
            on_batch=on_batch,
            foreign_tokens=self._foreign_tokens,
            memo=self._memo,
        )
