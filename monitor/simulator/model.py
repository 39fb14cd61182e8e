"""The simulated world as frozen values: chains and tokens, wallets, positions, the timeline.

A ``Scenario`` is what a scenario file says once validated (``scenario.parse_scenario``). All
addresses are stored lowercase; amounts are ``int`` base units; prices are ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from monitor.domain.addresses import NATIVE_TOKEN, to_checksum
from monitor.simulator.faults import Fault

FILTER_EMPTY_MODES = ("token", "wallet")
WALLET_KEY_CASES = ("checksum", "lower", "echo")
REPEATED_WALLETS_MODES = ("reject", "accept")
ERROR_BODY_SHAPES = ("described", "message")
DEFAULT_RATE_LIMIT_TOLERANCE_S = 0.02

NATIVE_COINS: dict[int, tuple[str, str]] = {
    1: ("ETH", "Ether"),
    10: ("ETH", "Ether"),
    56: ("BNB", "BNB"),
    100: ("xDAI", "xDAI"),
    130: ("ETH", "Ether"),
    137: ("POL", "Polygon Ecosystem Token"),
    146: ("S", "Sonic"),
    324: ("ETH", "Ether"),
    8453: ("ETH", "Ether"),
    42161: ("ETH", "Ether"),
    43114: ("AVAX", "Avalanche"),
    59144: ("ETH", "Ether"),
}
"""Symbol and name of each supported chain's native coin."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenSpec:
    """A token of one chain. ``custom`` tokens are not on 1inch's token list: only the POST
    (custom-token) endpoints see them. ``usd_price`` None: the price API omits the token."""

    chain_id: int
    address: str
    symbol: str
    name: str
    decimals: int
    usd_price: Decimal | None = None
    tags: tuple[str, ...] = ()
    native: bool = False
    custom: bool = False


def native_coin(chain_id: int, *, usd_price: Decimal | None = None) -> TokenSpec:
    """The native pseudo-token of ``chain_id`` as 1inch lists it."""
    symbol, name = NATIVE_COINS[chain_id]
    return TokenSpec(
        chain_id=chain_id,
        address=NATIVE_TOKEN,
        symbol=symbol,
        name=name,
        decimals=18,
        usd_price=usd_price,
        tags=("native", f"PEG:{symbol}"),
        native=True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSpec:
    """A chain and its tokens, the native pseudo-token first."""

    id: int
    tokens: tuple[TokenSpec, ...]

    @property
    def native(self) -> TokenSpec:
        """The chain's native coin (always present after validation)."""
        return next(t for t in self.tokens if t.native)

    @property
    def custom_tokens(self) -> tuple[TokenSpec, ...]:
        return tuple(t for t in self.tokens if t.custom)


@dataclass(frozen=True, slots=True, kw_only=True)
class WalletSpec:
    address: str
    label: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SpenderSpec:
    """A spender the monitor should watch on one chain (informational for the server)."""

    chain_id: int
    address: str
    label: str | None = None
    trusted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceEntry:
    chain_id: int
    wallet: str
    token: str
    amount: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowanceEntry:
    """An allowance. ``approved`` is what the wallet's ``Approval`` log says it approved
    (None: ``amount``); an ``amount`` below it is an approval partly spent by ``transferFrom``,
    which lowers an allowance without any event."""

    chain_id: int
    wallet: str
    token: str
    spender: str
    amount: int
    approved: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineEvent:
    """A change that takes effect from poll ``at_poll`` on, or ``at_s`` seconds after start
    (exactly one of the two is set)."""

    at_poll: int | None = None
    at_s: float | None = None
    set_balance: BalanceEntry | None = None
    set_allowance: AllowanceEntry | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Behaviour:
    """Knobs for what 1inch's documentation leaves open (docs/1inch-notes.md, open questions)."""

    filter_empty: str = "token"
    wallet_key_case: str = "checksum"
    repeated_wallets: str = "reject"
    max_wallets_per_request: int | None = None
    native_in_custom: bool = True
    error_body: str = "described"


@dataclass(frozen=True, slots=True, kw_only=True)
class Web3Spec:
    """How the Web3 RPC API (``/web3/{chain}``) lays the scenario out in blocks.

    Every chain's history runs from ``first_block`` to ``first_block + history_blocks``, the
    head at step 1 (the simulator's start): the starting approvals were granted in it. Each
    step (an ``eth_blockNumber`` answered) adds ``blocks_per_step`` blocks; the changes of the
    step are in its first block. ``max_block_range`` and ``max_logs`` make ``eth_getLogs``
    refuse larger ranges or answers with a real provider's error; ``multicall`` places
    Multicall3 at its canonical address; ``batches`` accepts JSON-RPC batch arrays;
    ``no_code`` lists spenders that are plain accounts (every other spender is a contract).
    """

    first_block: int = 0
    history_blocks: int = 5_000
    blocks_per_step: int = 25
    block_time_s: int = 12
    max_block_range: int | None = None
    max_logs: int | None = None
    multicall: bool = True
    batches: bool = True
    no_code: tuple[str, ...] = ()

    @property
    def start_head(self) -> int:
        """The head block at step 1."""
        return self.first_block + self.history_blocks


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateSpec:
    """Generated mode: a large deterministic world computed on demand from ``seed``."""

    seed: int
    chains: tuple[int, ...]
    wallets: int
    tokens: int
    spenders: int
    nonzero_fraction: float = 1.0
    unlimited_fraction: float = 0.2
    churn_fraction: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A validated scenario: what the simulated 1inch API knows and how it misbehaves."""

    chains: tuple[ChainSpec, ...]
    wallets: tuple[WalletSpec, ...]
    spenders: tuple[SpenderSpec, ...] = ()
    balances: tuple[BalanceEntry, ...] = ()
    allowances: tuple[AllowanceEntry, ...] = ()
    timeline: tuple[TimelineEvent, ...] = ()
    faults: tuple[Fault, ...] = ()
    behaviour: Behaviour = field(default_factory=Behaviour)
    api_key: str | None = field(default=None, repr=False)
    requests_per_second: int | None = None
    rate_limit_tolerance_s: float = DEFAULT_RATE_LIMIT_TOLERANCE_S
    retry_after_s: int | None = None
    generate: GenerateSpec | None = None
    web3: Web3Spec = field(default_factory=Web3Spec)
    description: str | None = None
    source: str = "<scenario>"

    @property
    def tokens(self) -> tuple[TokenSpec, ...]:
        """Every token of every chain, in chain order."""
        return tuple(token for chain in self.chains for token in chain.tokens)

    def chain(self, chain_id: int) -> ChainSpec | None:
        """The chain with id ``chain_id``, if the scenario has it."""
        return next((c for c in self.chains if c.id == chain_id), None)

    def monitor_config(self, base_url: str, *, discovery: bool = False) -> dict[str, object]:
        """A monitor configuration document (YAML-able) that watches this scenario.

        Custom tokens are listed as ``{address, symbol, decimals}`` (the POST endpoints return
        no metadata). Chains without spenders are left out (the monitor polls per spender),
        unless ``discovery``: then every chain is in, with ``discovery: {start_block}`` at the
        first block of the Web3 RPC API's history (so the first scan covers it exactly).
        ``api.requests_per_second`` and ``api.max_wallets_per_request`` are set when the
        scenario limits them. The API key,
        if the scenario requires one, is not included: the monitor reads it from its
        environment.
        """
        api: dict[str, object] = {"base_url": base_url}
        if self.requests_per_second is not None:
            api["requests_per_second"] = self.requests_per_second
        if self.behaviour.max_wallets_per_request is not None:
            api["max_wallets_per_request"] = min(50, self.behaviour.max_wallets_per_request)
        chains: list[dict[str, object]] = []
        for chain in self.chains:
            spenders = [s for s in self.spenders if s.chain_id == chain.id]
            if not spenders and not discovery:
                continue
            entry: dict[str, object] = {"id": chain.id}
            if spenders:
                entry["spenders"] = [_spender_entry(s) for s in spenders]
            if discovery:
                entry["discovery"] = {"start_block": self.web3.first_block}
            if chain.custom_tokens:
                entry["custom_tokens"] = [
                    {"address": to_checksum(t.address), "symbol": t.symbol, "decimals": t.decimals}
                    for t in chain.custom_tokens
                ]
            chains.append(entry)
        return {
            "api": api,
            "wallets": [_labelled(to_checksum(w.address), w.label) for w in self.wallets],
            "chains": chains,
        }


def _labelled(address: str, label: str | None) -> dict[str, object]:
    return {"address": address} if label is None else {"address": address, "label": label}


def _spender_entry(spender: SpenderSpec) -> dict[str, object]:
    return _labelled(to_checksum(spender.address), spender.label) | {"trusted": spender.trusted}
