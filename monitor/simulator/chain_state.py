"""The scenario laid out in blocks: what the simulated Web3 RPC API (``web3_api``) answers from.

One ``ChainHistory`` per chain, built from the same ``Ledger`` the Balance API answers from,
so that a read at the head of step n equals the Balance API's answer at poll n:

- **History.** Blocks ``first_block`` .. ``first_block + history_blocks`` (the head at step
  1, the simulator's start). Every allowance the scenario starts with (and every timeline
  change of poll 1 or ``at_s: 0``) was granted by an ``Approval`` log at a block of the
  history, spread evenly in file order (generated scenarios: at a block hashed from the
  position). Before that block the allowance reads 0; at it, the log's value (an entry's
  ``approved``); after it, the ledger's amount (below ``approved``: partly spent).
- **Steps.** Step n is the n-th ``eth_blockNumber`` answered (the chain's own poll count,
  like the Balance API's count of aggregated answers); its head is
  ``start_head + (n - 1) * blocks_per_step``. The changes of step n (timeline events of
  ``at_poll: n``, ``at_s`` events whose time came since step n - 1, a generated world's
  churn) are ``Approval`` logs in its first block, one per position, with the position's
  new value; from that block on the chain reads the ledger at poll n and at the elapsed
  time step n was served at.
- **Time.** Step 1's head is the simulator's start (wall clock); history blocks are
  ``block_time_s`` apart before it. A later step's head is stamped with the time it was
  served, its other blocks ``block_time_s`` apart below it but never before the previous
  head: timestamps never decrease and never run ahead of the clock.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from monitor.chain.abi import MULTICALL3_ADDRESS
from monitor.domain.keccak import keccak256
from monitor.simulator.ledger import Ledger
from monitor.simulator.model import ChainSpec, Scenario, TokenSpec, Web3Spec

_Key = tuple[str, str, str]
"""(token, owner, spender), lowercase."""

_CONTRACT_CODE = bytes.fromhex("6080604052348015600f57600080fd5b50")
"""The code every simulated contract has (only its presence matters to a reader)."""


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One ERC-20 ``Approval(owner, spender, value)`` log of ``token``."""

    block: int
    index: int
    token: str
    owner: str
    spender: str
    value: int


class ChainHistory:
    """One chain's blocks, ``Approval`` logs and state at any block up to the head."""

    def __init__(
        self, *, scenario: Scenario, chain: ChainSpec, ledger: Ledger, anchor_unix: float
    ) -> None:
        spec = scenario.web3
        self.chain_id = chain.id
        self._spec = spec
        self._ledger = ledger
        self._anchor = int(anchor_unix)
        self._tokens: dict[str, TokenSpec] = {t.address: t for t in chain.tokens if not t.native}
        self._native = chain.native
        self._count = 0
        self._elapsed: list[float] = [0.0, 0.0]  # by step; step 1 is the start
        self._logs: list[ApprovalRecord] = []
        self._blocks: list[int] = []
        self._by_owner: dict[str, list[ApprovalRecord]] = {}
        self._owner_blocks: dict[str, list[int]] = {}
        self._born: dict[_Key, tuple[int, int]] = {}
        self._generated = scenario.generate is not None
        self._churn = scenario.generate is not None and scenario.generate.churn_fraction > 0
        self._wallets = tuple(w.address for w in scenario.wallets)
        chain_spenders = [s.address for s in scenario.spenders if s.chain_id == chain.id]
        self._spenders = tuple(chain_spenders)
        self._poll_keys: dict[int, list[_Key]] = {}
        self._time_keys: list[tuple[float, _Key]] = []
        first_keys: list[_Key] = []
        approved: dict[_Key, int] = {}
        for entry in scenario.allowances:
            if entry.chain_id == chain.id:
                key = (entry.token, entry.wallet, entry.spender)
                first_keys.append(key)
                if entry.approved is not None:
                    approved[key] = entry.approved
        ordered = sorted(
            scenario.timeline,
            key=lambda e: (0, e.at_poll, 0.0) if e.at_poll is not None else (1, 0, e.at_s or 0.0),
        )
        for event in ordered:
            change = event.set_allowance
            if change is None or change.chain_id != chain.id:
                continue
            key = (change.token, change.wallet, change.spender)
            if event.at_poll == 1 or event.at_s == 0.0:
                first_keys.append(key)
                approved.pop(key, None)  # changed at the start: the log says the new value
            elif event.at_poll is not None:
                self._poll_keys.setdefault(event.at_poll, []).append(key)
            elif event.at_s is not None:
                self._time_keys.append((event.at_s, key))
        contracts = set(self._tokens)
        contracts.update(chain_spenders)
        contracts.update(key[2] for key in first_keys)
        contracts.update(key[2] for keys in self._poll_keys.values() for key in keys)
        contracts.update(key[2] for _, key in self._time_keys)
        if spec.multicall:
            contracts.add(MULTICALL3_ADDRESS)
        contracts.difference_update(spec.no_code)
        contracts.difference_update(self._wallets)
        self._contracts = frozenset(contracts)
        self._build_history(list(dict.fromkeys(first_keys)), approved)

    # -- blocks and steps --------------------------------------------------------------------

    @property
    def spec(self) -> Web3Spec:
        """The scenario's ``web3`` settings."""
        return self._spec

    @property
    def start_head(self) -> int:
        """The head at step 1."""
        return self._spec.start_head

    @property
    def step(self) -> int:
        """The step the chain is at (at least 1)."""
        return max(self._count, 1)

    def head(self) -> int:
        """The newest block."""
        return self.head_of(self.step)

    def next_step(self) -> int:
        """The step an ``eth_blockNumber`` answer reflects now."""
        return self._count + 1

    def head_of(self, step: int) -> int:
        """The head block at ``step``."""
        return self._spec.start_head + (step - 1) * self._spec.blocks_per_step

    def step_of(self, block: int) -> int:
        """The step whose blocks hold ``block`` (1 for the history)."""
        over = block - self._spec.start_head
        return (
            1
            if over <= 0
            else (over + self._spec.blocks_per_step - 1) // self._spec.blocks_per_step + 1
        )

    def served(self, step: int, elapsed_s: float) -> None:
        """An ``eth_blockNumber`` answer reflecting ``step`` reached the client at
        ``elapsed_s``: the chain moves on to it (never back), its changes become logs."""
        while self._count < step:
            k = self._count + 1
            if k >= 2:
                self._elapsed.append(max(elapsed_s, self._elapsed[k - 1]))
                self._append_step(k)
            self._count = k

    def timestamp(self, block: int) -> int:
        """Unix seconds of ``block`` (see the module's notes)."""
        start = self._spec.start_head
        if block <= start:
            return self._anchor - (start - block) * self._spec.block_time_s
        step = self.step_of(block)
        top = self.head_of(step)
        return max(
            self._step_time(step - 1),
            self._step_time(step) - (top - block) * self._spec.block_time_s,
        )

    def _step_time(self, step: int) -> int:
        return self._anchor + int(self._elapsed[step])

    def block_hash(self, block: int) -> str:
        """A hash for ``block``, the same at every ask."""
        return _hash(f"block:{self.chain_id}:{block}")

    def transaction_hash(self, record: ApprovalRecord) -> str:
        """The hash of the transaction that emitted ``record``."""
        return _hash(f"tx:{self.chain_id}:{record.block}:{record.index}")

    # -- state ---------------------------------------------------------------------------------

    def token(self, address: str) -> TokenSpec | None:
        """The ERC-20 at ``address`` (lowercase), if the chain has it."""
        return self._tokens.get(address)

    def has_code(self, address: str) -> bool:
        """Whether ``address`` (lowercase) is a contract: a token, Multicall3 (when placed) or
        a spender not in ``web3.no_code``."""
        return address in self._contracts

    @staticmethod
    def code(address: str) -> bytes:
        """The code of a contract at ``address``."""
        return _CONTRACT_CODE + keccak256(address.encode())[:8]

    def allowance(self, token: str, owner: str, spender: str, block: int) -> int:
        """``allowance(owner, spender)`` of ``token`` at ``block`` (lowercase addresses)."""
        key = (token, owner, spender)
        step = self.step_of(block)
        if step == 1:
            born = self._born.get(key)
            if born is None or block < born[0]:
                return 0
            if block == born[0]:
                return born[1]
        return self._ledger_allowance(key, step)

    def balance(self, token: TokenSpec, owner: str, block: int) -> int:
        """``balanceOf(owner)`` of ``token`` (the native coin: the wei balance) at ``block``."""
        step = self.step_of(block)
        return self._ledger.balance(self.chain_id, owner, token, step, self._elapsed[step])

    def native_balance(self, owner: str, block: int) -> int:
        """The wei balance of ``owner`` at ``block``."""
        return self.balance(self._native, owner, block)

    def _ledger_allowance(self, key: _Key, step: int) -> int:
        token = self._tokens.get(key[0])
        if token is None:
            return 0
        return self._ledger.allowance(
            self.chain_id, key[1], token, key[2], step, self._elapsed[step]
        )

    # -- logs ----------------------------------------------------------------------------------

    def logs(
        self,
        *,
        from_block: int,
        to_block: int,
        addresses: frozenset[str] | None,
        owners: frozenset[str] | None,
        spenders: frozenset[str] | None,
    ) -> list[ApprovalRecord]:
        """The ``Approval`` logs in ``from_block``..``to_block`` of those tokens, owners and
        spenders (None: any), by block and log index."""
        if owners is None:
            lo = bisect.bisect_left(self._blocks, from_block)
            hi = bisect.bisect_right(self._blocks, to_block)
            found: Iterable[ApprovalRecord] = self._logs[lo:hi]
        else:
            picked: list[ApprovalRecord] = []
            for owner in owners:
                records = self._by_owner.get(owner)
                if not records:
                    continue
                blocks = self._owner_blocks[owner]
                lo = bisect.bisect_left(blocks, from_block)
                hi = bisect.bisect_right(blocks, to_block)
                picked.extend(records[lo:hi])
            picked.sort(key=lambda r: (r.block, r.index))
            found = picked
        return [
            r
            for r in found
            if (addresses is None or r.token in addresses)
            and (spenders is None or r.spender in spenders)
        ]

    @property
    def log_count(self) -> int:
        """Every ``Approval`` log up to the head."""
        return len(self._logs)

    def _build_history(self, keys: list[_Key], approved: dict[_Key, int]) -> None:
        spec = self._spec
        low = spec.first_block + 1
        high = spec.start_head - max(1, min(64, spec.history_blocks // 4))
        placed: list[tuple[int, int, _Key, int]] = []
        if self._generated:
            for order, key in enumerate(self._generated_keys()):
                value = self._ledger_allowance(key, 1)
                if value:
                    digest = hashlib.blake2b(
                        f"{self.chain_id}:{key[0]}:{key[1]}:{key[2]}".encode(), digest_size=8
                    ).digest()
                    block = low + int.from_bytes(digest) % (high - low + 1)
                    placed.append((block, order, key, value))
        else:
            count = len(keys)
            for order, key in enumerate(keys):
                value = approved.get(key, self._ledger_allowance(key, 1))
                if value:
                    block = low + (order + 1) * (high - low) // (count + 1)
                    placed.append((block, order, key, value))
        placed.sort()
        index = 0
        previous = -1
        for block, _, key, value in placed:
            index = index + 1 if block == previous else 0
            previous = block
            self._born[key] = (block, value)
            self._add(ApprovalRecord(block, index, key[0], key[1], key[2], value))

    def _generated_keys(self) -> Iterable[_Key]:
        for wallet in self._wallets:
            for token in self._tokens:
                for spender in self._spenders:
                    yield (token, wallet, spender)

    def _append_step(self, step: int) -> None:
        block = self.head_of(step - 1) + 1
        keys: Sequence[_Key]
        if self._generated:
            keys = (
                [
                    key
                    for key in self._generated_keys()
                    if self._ledger_allowance(key, step) != self._ledger_allowance(key, step - 1)
                ]
                if self._churn
                else []
            )
        else:
            since, until = self._elapsed[step - 1], self._elapsed[step]
            keys = list(
                dict.fromkeys(
                    [
                        *self._poll_keys.get(step, ()),
                        *(key for at_s, key in self._time_keys if since < at_s <= until),
                    ]
                )
            )
        for index, key in enumerate(keys):
            value = self._ledger_allowance(key, step)
            self._add(ApprovalRecord(block, index, key[0], key[1], key[2], value))

    def _add(self, record: ApprovalRecord) -> None:
        self._logs.append(record)
        self._blocks.append(record.block)
        self._by_owner.setdefault(record.owner, []).append(record)
        self._owner_blocks.setdefault(record.owner, []).append(record.block)


def _hash(text: str) -> str:
    return "0x" + keccak256(text.encode()).hex()
