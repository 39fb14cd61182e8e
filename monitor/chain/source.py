"""Discovered approvals, read live on-chain, as a ``PositionSource`` (``monitor.ports``).

One poll, per chain with ``discovery`` and an RPC endpoint:

1. the head block; logs are scanned up to head minus ``confirmations`` (``ApprovalScanner``),
   from each wallet's cursor, and every chunk scanned is saved (pairs and cursors together)
   before the next, so an interrupted first scan resumes where it stopped;
2. every (wallet, token, spender) pair any ``Approval`` log named is read live at the head:
   ``allowance`` and ``balanceOf``, and the native balance (``LiveReader``: Multicall3 when
   deployed, batched ``eth_call`` otherwise). The live value is the truth, never a log's;
3. the pairs read become batches of the poll, one per (spender, set of tokens) with the
   wallets that share it, so each batch's coverage (wallets x tokens) is exactly what was
   read: inside it a zero is a real zero (a revoke), and a pair that could not be read is in
   no batch, so its previous value stands.

A chain whose node fails makes one failed batch per spender it knew of (or one with no
spender), so the poll says that chain is unknown; it never reads as "no approvals".

A pair whose token does not answer as an ERC-20 (a contract emitting fake ``Approval`` logs,
an ``allowance()`` that reverts) is unreadable: counted in ``status()``, never a position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from monitor.chain.abi import ApprovalLog
from monitor.chain.discovery import ApprovalScanner, ScanChunk, ScanProgress
from monitor.chain.reads import LiveReader, LiveReads
from monitor.chain.rpc import ChainRpc
from monitor.config import ChainConfig, Config
from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import BatchOutcome, PollResult, Position, Token
from monitor.domain.records import DiscoveryFacts
from monitor.domain.snapshot import AllowanceKey
from monitor.errors import StoreError, UpstreamError
from monitor.ports import Clock, utc_now
from monitor.store.discovery import DiscoveredApproval, SqlDiscoveryStore

log = logging.getLogger(__name__)

DISCOVERY_SCOPE = ""
"""The ``spender`` of the batch that stands for a chain's discovery as a whole (read or not):
its scope says the chain's node answered even when no approval was found."""
SOURCE_NAME = "chain"
"""``BatchOutcome.source`` of what this source reads (1inch's answers are ``"1inch"``)."""

NATIVE_SYMBOLS = {1: "ETH", 10: "ETH", 56: "BNB", 100: "xDAI", 137: "POL", 8453: "ETH"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainStatus:
    """What discovery knows of one chain, for metrics and the status page."""

    chain_id: int
    endpoint: str
    """``scheme://host[:port]`` only."""
    head_block: int | None = None
    scanned_to: int | None = None
    """The highest block every watched wallet's scan has covered."""
    scan_total_blocks: int = 0
    scan_done_blocks: int = 0
    scan_eta_s: float | None = None
    scanning: bool = False
    pairs: int = 0
    unreadable: int = 0
    nft_approvals: int = 0
    multicall: bool | None = None
    last_error: str | None = None


class ChainPositions:
    """The chain reader as a ``PositionSource``: discovered approvals, read live."""

    def __init__(
        self,
        config: Config,
        rpcs: Mapping[int, ChainRpc],
        store: SqlDiscoveryStore,
        *,
        clock: Clock = utc_now,
        scan_budget_s: float | None = None,
        read_budget_s: float | None = None,
        known_tokens: Callable[[], Awaitable[Mapping[tuple[int, str], Token]]] | None = None,
    ) -> None:
        """``scan_budget_s``: the most one poll spends scanning logs (None: no limit), checked
        between chunks. ``read_budget_s``: the most one chain's poll takes in all (None: no
        limit); past it the chain's batches fail as timed out and the other sources' answers
        are kept.
        ``known_tokens``: the token metadata stored by earlier runs (the snapshot store's
        ``tokens``), so that a token's symbol and decimals are read on-chain once, not once
        per process."""
        self._known_tokens = known_tokens
        self._scan_budget_s = scan_budget_s
        self._read_budget_s = read_budget_s
        self._scanners: dict[int, ApprovalScanner] = {}
        self._tokens_by_spender: dict[tuple[int, str], frozenset[str]] = {}
        self._pairs_cache: dict[int, tuple[tuple[int, int], list[DiscoveredApproval]]] = {}
        self._config = config
        self._chains = tuple(c for c in config.discovery_chains if c.id in rpcs)
        self._rpcs = rpcs
        self._store = store
        self._clock = clock
        self._readers = {
            chain_id: LiveReader(rpc, calls_per_multicall=config.rpc.calls_per_multicall)
            for chain_id, rpc in rpcs.items()
        }
        self._tokens: dict[tuple[int, str], Token] = {}
        self._has_code: dict[tuple[int, str], bool] = {}
        self._positions: dict[int, dict[tuple[str, str, str], Position]] = {}
        """Per chain, the last poll's positions by (wallet, token, spender): one whose values
        did not change is reused (positions are frozen), not built again."""
        self._native_tokens: dict[int, Token] = {}
        self._approved_at: dict[AllowanceKey, datetime] = {}
        self._discovered: set[AllowanceKey] = set()
        self._status = {
            c.id: ChainStatus(chain_id=c.id, endpoint=rpcs[c.id].endpoint.display)
            for c in self._chains
        }
        self._checked_chain_ids: set[int] = set()

    @property
    def chains(self) -> tuple[ChainConfig, ...]:
        return self._chains

    def status(self) -> tuple[ChainStatus, ...]:
        """Per chain, what discovery knows now (cheap: read at scrape time)."""
        return tuple(self._status[c.id] for c in self._chains)

    def facts(self) -> DiscoveryFacts:
        """What discovery knows beyond amounts (the ``ApprovalFacts`` port)."""
        return DiscoveryFacts(
            approved_at=dict(self._approved_at),
            codeless_spenders=frozenset(k for k, has in self._has_code.items() if not has),
            discovered=frozenset(self._discovered),
        )

    async def load(self) -> DiscoveryFacts:
        """Read what earlier runs discovered (for a restart's first evaluation)."""
        if self._known_tokens is not None:
            chain_ids = {c.id for c in self._chains}
            for key, token in (await self._known_tokens()).items():
                # One whose decimals could not be read is asked again.
                if key[0] in chain_ids and token.decimals is not None:
                    self._tokens.setdefault(key, token)
        for chain in self._chains:
            self._remember(chain.id, await self._store.discovered(chain.id))
            for spender, has in (await self._store.spender_code(chain.id)).items():
                self._has_code[(chain.id, spender)] = has
        return self.facts()

    async def poll(
        self,
        *,
        on_start: Callable[[int], None] | None = None,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> PollResult:
        started_at = self._clock()
        # Progress is counted per chain: how many batches a chain's read makes is known only
        # once it is done. Each chain reports one outcome, a failed one if any failed.
        if on_start is not None:
            on_start(len(self._chains))

        async def one_chain(chain: ChainConfig) -> list[BatchOutcome]:
            outcomes = await self._poll_chain(chain)
            if on_batch is not None and outcomes:
                on_batch(next((o for o in outcomes if not o.ok), outcomes[0]))
            return outcomes

        results = await asyncio.gather(*(one_chain(chain) for chain in self._chains))
        batches = tuple(outcome for outcomes in results for outcome in outcomes)
        return PollResult(started_at=started_at, finished_at=self._clock(), batches=batches)

    # -- one chain ---------------------------------------------------------------------------

    async def _poll_chain(self, chain: ChainConfig) -> list[BatchOutcome]:
        rpc = self._rpcs[chain.id]
        try:
            async with asyncio.timeout(self._read_budget_s):
                return await self._read_chain(chain, rpc)
        except (UpstreamError, StoreError) as exc:
            self._status[chain.id] = replace(self._status[chain.id], last_error=str(exc))
            log.warning(
                "discovery on chain %s (%s) failed: %s", chain.id, rpc.endpoint.display, exc
            )
            return self._failed(
                chain, str(exc), exc.reason if isinstance(exc, UpstreamError) else "store"
            )
        except TimeoutError:
            problem = f"discovery did not finish within {self._read_budget_s:g}s"
            self._status[chain.id] = replace(self._status[chain.id], last_error=problem)
            log.warning("discovery on chain %s (%s): %s", chain.id, rpc.endpoint.display, problem)
            return self._failed(chain, problem, "timeout")
        except Exception as exc:
            # A node's answer no check foresaw must cost this chain's poll, never the poll of
            # every source (1inch's answers included) and never the daemon.
            log.exception("discovery on chain %s failed unexpectedly", chain.id)
            problem = f"discovery failed: {type(exc).__name__}"
            self._status[chain.id] = replace(self._status[chain.id], last_error=problem)
            return self._failed(chain, problem, "internal")

    async def _read_chain(self, chain: ChainConfig, rpc: ChainRpc) -> list[BatchOutcome]:
        assert chain.discovery is not None
        if chain.id not in self._checked_chain_ids:
            await self._check_chain_id(chain, rpc)
        head = await rpc.block_number()
        confirmed = head - chain.discovery.confirmations
        wallets = [w.address for w in self._config.wallets_on(chain.id)]
        cursors = await self._store.cursors(
            chain.id, wallets, start_block=chain.discovery.start_block
        )
        self._status[chain.id] = replace(self._status[chain.id], head_block=head, last_error=None)
        scanned: int | None = None
        if wallets:
            scanned = min(cursors.values()) - 1
            if scanned < confirmed:
                scanned = await self._scan(chain, rpc, cursors, confirmed)
        if scanned is not None and scanned < chain.discovery.start_block:
            scanned = None
        watched = set(wallets)
        found = [d for d in await self._discovered_pairs(chain.id) if d.wallet in watched]
        self._remember(chain.id, found)
        return await self._read_pairs(chain, head, found, scanned)

    async def _discovered_pairs(self, chain_id: int) -> Sequence[DiscoveredApproval]:
        """Every pair discovered on ``chain_id``, read again only when the store's marker
        moved (a scan here or in another process found or re-approved a pair): reading
        20,000 pairs costs a third of a steady poll."""
        marker = await self._store.discovered_marker(chain_id)
        cached = self._pairs_cache.get(chain_id)
        if cached is not None and cached[0] == marker:
            return cached[1]
        pairs = await self._store.discovered(chain_id)
        self._pairs_cache[chain_id] = (marker, pairs)
        return pairs

    async def _check_chain_id(self, chain: ChainConfig, rpc: ChainRpc) -> None:
        answered = await rpc.chain_id()
        if answered != chain.id:
            # Not retried poll after poll silently: every poll fails loudly until fixed.
            raise WrongChain(chain.id, answered, rpc.endpoint.display)
        self._checked_chain_ids.add(chain.id)

    async def _scan(
        self, chain: ChainConfig, rpc: ChainRpc, cursors: Mapping[str, int], to_block: int
    ) -> int:
        """Scan up to ``to_block``, or as far as ``scan_budget_s`` allows (a first scan of a
        long history takes many polls; each saves its chunks, so the next one resumes and
        the pairs found so far are read meanwhile). Returns the block every wallet's scan
        has reached."""
        status = self._status[chain.id]
        self._status[chain.id] = replace(status, scanning=True)

        async def save(chunk: ScanChunk) -> None:
            # Shielded: the chain's time limit must not cancel a write half-way (an aiosqlite
            # statement goes on in its thread and would leave SQLite locked for the next).
            await asyncio.shield(
                self._store.save_chunk(
                    chain.id,
                    cursors=chunk.cursors,
                    approvals=chunk.approvals,
                    block_times=chunk.block_times,
                    nft_approvals=chunk.nft_approvals,
                )
            )

        scanner = self._scanners.get(chain.id)
        if scanner is None:
            # One per chain for the process's life: it remembers a provider's range cap.
            scanner = self._scanners[chain.id] = ApprovalScanner(
                rpc,
                chain_id=chain.id,
                max_block_range=self._config.rpc.max_block_range,
                wallets_per_query=self._config.rpc.wallets_per_query,
                clock=time.monotonic,
                on_progress=lambda p: self._progress(chain.id, p),
            )
        deadline = None if self._scan_budget_s is None else time.monotonic() + self._scan_budget_s

        async def save_within_budget(chunk: ScanChunk) -> None:
            # Stopped between chunks, never by cancelling one: a write cancelled half-way can
            # leave SQLite locked for the next.
            await save(chunk)
            if deadline is not None and time.monotonic() >= deadline:
                raise _BudgetSpent

        try:
            await scanner.scan(cursors, to_block=to_block, on_chunk=save_within_budget)
        except _BudgetSpent:
            reached = await self._store.cursors(chain.id, list(cursors), start_block=0)
            scanned_to = min(reached.values()) - 1
            log.info(
                "discovery on chain %s: scanned to block %d of %d this poll; the scan goes on "
                "at the next poll, and what it found so far is read now",
                chain.id,
                scanned_to,
                to_block,
            )
            self._status[chain.id] = replace(self._status[chain.id], scanned_to=scanned_to)
            return scanned_to
        self._status[chain.id] = replace(
            self._status[chain.id],
            scanning=False,
            scanned_to=to_block,
            scan_eta_s=None,
            nft_approvals=await self._store.nft_approvals(chain.id),
        )
        return to_block

    def _progress(self, chain_id: int, p: ScanProgress) -> None:
        self._status[chain_id] = replace(
            self._status[chain_id],
            scan_total_blocks=p.total_blocks,
            scan_done_blocks=p.done_blocks,
            scan_eta_s=p.eta_s,
        )

    async def _read_pairs(
        self,
        chain: ChainConfig,
        head: int,
        found: Sequence[DiscoveredApproval],
        scanned_to: int | None,
    ) -> list[BatchOutcome]:
        reader = self._readers[chain.id]
        pairs = sorted({(d.wallet, d.token, d.spender) for d in found})
        holdings = sorted({(wallet, token) for wallet, token, _ in pairs})
        wallets = sorted({wallet for wallet, _, _ in pairs})
        tokens = sorted({token for _, token, _ in pairs})
        unknown_tokens = [t for t in tokens if (chain.id, t) not in self._tokens]
        if unknown_tokens:
            metadata = await reader.token_metadata(unknown_tokens, block=head)
            for address, meta in metadata.items():
                self._tokens[(chain.id, address)] = Token(
                    chain_id=chain.id,
                    address=address,
                    symbol=meta.symbol or "",
                    name=meta.name or "",
                    decimals=meta.decimals,
                )
        spenders = sorted({spender for _, _, spender in pairs})
        unchecked = [s for s in spenders if not self._has_code.get((chain.id, s), False)]
        if unchecked:
            codes = await reader.has_code(unchecked, block=head)
            changed = {
                s: has for s, has in codes.items() if self._has_code.get((chain.id, s)) != has
            }
            self._has_code.update({(chain.id, s): has for s, has in codes.items()})
            await asyncio.shield(self._store.save_spender_code(chain.id, changed))
        reads = await reader.read(block=head, allowances=pairs, balances=holdings, natives=wallets)
        self._status[chain.id] = replace(
            self._status[chain.id],
            head_block=head,
            scanned_to=scanned_to,
            pairs=len(pairs),
            multicall=await reader.multicall_available(block=head),
        )
        # One batch for the chain's discovery as a whole (spender "", covering nothing): the
        # chain was read, even when no approval is found, so it counts as up and recent.
        whole = BatchOutcome(
            chain_id=chain.id,
            spender=DISCOVERY_SCOPE,
            wallets=tuple(w.address for w in self._config.wallets_on(chain.id)),
            kind="discovered",
            source=SOURCE_NAME,
            tokens=frozenset(),
        )
        return [whole, *self._batches(chain.id, pairs, reads)]

    def _batches(
        self, chain_id: int, pairs: Sequence[tuple[str, str, str]], reads: LiveReads
    ) -> list[BatchOutcome]:
        allowances, balances, natives = reads.allowances, reads.balances, reads.natives
        native = self._native_tokens.get(chain_id)
        if native is None:
            native = self._native_tokens[chain_id] = Token(
                chain_id=chain_id,
                address=NATIVE_TOKEN,
                symbol=NATIVE_SYMBOLS.get(chain_id, "native"),
                name="",
                decimals=18,
                tags=("native",),
            )
        previous = self._positions.get(chain_id, {})
        kept: dict[tuple[str, str, str], Position] = {}

        def position(
            wallet: str, token: Token, spender: str, balance: int, allowance: int
        ) -> Position:
            key = (wallet, token.address, spender)
            last = previous.get(key)
            if (
                last is None
                or last.token is not token
                or last.balance != balance
                or last.allowance != allowance
            ):
                last = Position(
                    chain_id=chain_id,
                    wallet=wallet,
                    spender=spender,
                    token=token,
                    balance=balance,
                    allowance=allowance,
                    source=SOURCE_NAME,
                )
            kept[key] = last
            return last

        # (wallet, spender) -> the tokens read completely (allowance and balance).
        readable: dict[tuple[str, str], set[str]] = {}
        unreadable = 0
        for pair in pairs:
            wallet, token, spender = pair
            # LiveReader re-checks every poll that a token answers as an ERC-20 (its
            # items are None otherwise): nothing here remembers "not a token" for good.
            if allowances.get(pair) is None or balances.get((wallet, token)) is None:
                unreadable += 1
                continue
            readable.setdefault((wallet, spender), set()).add(token)
        self._status[chain_id] = replace(self._status[chain_id], unreadable=unreadable)
        # Wallets sharing a spender and the same token set make one batch: its coverage
        # (wallets x tokens) is exactly what was read.
        groups: dict[tuple[str, frozenset[str]], list[str]] = {}
        for (wallet, spender), read_tokens in readable.items():
            groups.setdefault((spender, frozenset(read_tokens)), []).append(wallet)
        batches = []
        for (spender, token_set), group in sorted(
            groups.items(), key=lambda g: (g[0][0], sorted(g[0][1]))
        ):
            positions = []
            covered = set(token_set)
            if all(natives.get(wallet) is not None for wallet in group):
                covered.add(NATIVE_TOKEN)
            group_tokens = [(token, self._token(chain_id, token)) for token in sorted(token_set)]
            for wallet in sorted(group):
                for token, token_info in group_tokens:
                    balance = balances[(wallet, token)] or 0
                    allowance = allowances[(wallet, token, spender)] or 0
                    if balance or allowance:
                        positions.append(position(wallet, token_info, spender, balance, allowance))
                native_balance = natives.get(wallet)
                if native_balance and NATIVE_TOKEN in covered:
                    positions.append(position(wallet, native, spender, native_balance, 0))
            batches.append(
                BatchOutcome(
                    chain_id=chain_id,
                    spender=spender,
                    wallets=tuple(sorted(group)),
                    kind="discovered",
                    source=SOURCE_NAME,
                    tokens=frozenset(covered),
                    positions=tuple(positions),
                )
            )
        self._positions[chain_id] = kept
        return batches

    def _token(self, chain_id: int, address: str) -> Token:
        token = self._tokens.get((chain_id, address))
        if token is None:
            token = Token(chain_id=chain_id, address=address, symbol="", name="", decimals=None)
        return token

    def discovered_tokens(self, chain_id: int, spender: str) -> frozenset[str]:
        """The tokens of the pairs discovered for ``spender`` on ``chain_id``: this source
        reads them, whatever another source's silence about them says."""
        return self._tokens_by_spender.get((chain_id, spender), frozenset())

    def _remember(self, chain_id: int, found: Sequence[DiscoveredApproval]) -> None:
        by_spender: dict[tuple[int, str], set[str]] = {}
        for d in found:
            key = (chain_id, d.wallet, d.token, d.spender)
            self._discovered.add(key)
            self._approved_at[key] = d.last_approved_at
            by_spender.setdefault((chain_id, d.spender), set()).add(d.token)
        for spender_key, tokens in by_spender.items():
            known = self._tokens_by_spender.get(spender_key, frozenset())
            if not tokens <= known:
                self._tokens_by_spender[spender_key] = known | tokens

    def _failed(self, chain: ChainConfig, error: str, reason: str) -> list[BatchOutcome]:
        wallets = tuple(w.address for w in self._config.wallets_on(chain.id))
        spenders = [DISCOVERY_SCOPE, *sorted({k[3] for k in self._discovered if k[0] == chain.id})]
        return [
            BatchOutcome(
                chain_id=chain.id,
                spender=spender,
                wallets=wallets,
                kind="discovered",
                source=SOURCE_NAME,
                tokens=frozenset(),
                error=error,
                error_reason=reason,
            )
            for spender in spenders
        ]


class _BudgetSpent(Exception):
    """The scan of this poll has used its time: it goes on at the next poll."""


class WrongChain(UpstreamError):
    """The endpoint serves another chain than the one it is configured for."""

    def __init__(self, expected: int, answered: int, endpoint: str) -> None:
        super().__init__(
            f"eth_chainId answered {answered}, but this endpoint is configured for chain "
            f"{expected}: check chains[].rpc.url / EXPOSURE_MONITOR_RPC_URL_{expected}",
            endpoint=endpoint,
        )


__all__ = ["ApprovalLog", "ChainPositions", "ChainStatus", "DiscoveryFacts", "WrongChain"]
