"""Generated mode: a large, deterministic world for scale tests and benchmarks.

Only the lists (chains and tokens, wallets, spenders) are materialised; every amount is
computed on demand from the seed with an integer hash, so 300,000 positions cost no memory and
a 50-wallet answer is computed in milliseconds.

Churn: each position has a fixed phase ``u`` in [0, 1) drawn from the seed, and its value is
re-drawn whenever ``floor(u + (poll - 1) * churn_fraction)`` steps up. So at every poll about
``churn_fraction`` of the positions change, and the value at any poll is computed in O(1).
"""

from __future__ import annotations

import hashlib
import random
from decimal import Decimal

from monitor.domain.model import UINT256_MAX
from monitor.simulator.model import (
    ChainSpec,
    GenerateSpec,
    Scenario,
    SpenderSpec,
    TokenSpec,
    WalletSpec,
    native_coin,
)

_NATIVE_USD: dict[str, Decimal] = {
    "ETH": Decimal("3500"),
    "BNB": Decimal("600"),
    "POL": Decimal("0.25"),
    "xDAI": Decimal("1"),
    "AVAX": Decimal("30"),
    "S": Decimal("0.5"),
}
_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
_SCALE = 1 << 32
_GOLDEN = 0x9E3779B97F4A7C15
_BALANCE_SALT = 0x5BD1E995
_ALLOWANCE_SALT = 0x27D4EB2F165667C5


def _mix(value: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit integer hash."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _M64
    return value ^ (value >> 31)


def _address(seed: int, *parts: object) -> str:
    text = ":".join(str(p) for p in ("exposure-monitor-simulator", seed, *parts))
    return "0x" + hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def generate_world(
    spec: GenerateSpec,
) -> tuple[tuple[ChainSpec, ...], tuple[WalletSpec, ...], tuple[SpenderSpec, ...]]:
    """The chains (native coin plus ``spec.tokens`` tokens each), wallets and spenders."""
    chains: list[ChainSpec] = []
    spenders: list[SpenderSpec] = []
    for chain_id in spec.chains:
        base = native_coin(chain_id)
        native = native_coin(chain_id, usd_price=_NATIVE_USD.get(base.symbol, Decimal(1)))
        tokens = [native]
        for i in range(spec.tokens):
            rng = random.Random(f"{spec.seed}:token:{chain_id}:{i}")  # noqa: S311 (not crypto)
            tokens.append(
                TokenSpec(
                    chain_id=chain_id,
                    address=_address(spec.seed, "token", chain_id, i),
                    symbol=f"GEN{i}",
                    name=f"Generated Token {i}",
                    decimals=rng.choice((6, 8, 18, 18, 18)),
                    usd_price=Decimal(rng.randint(1, 1_000_000)) / 100,
                    tags=("tokens",),
                )
            )
        chains.append(ChainSpec(id=chain_id, tokens=tuple(tokens)))
        spenders.extend(
            SpenderSpec(
                chain_id=chain_id,
                address=_address(spec.seed, "spender", j),
                label=f"spender-{j}",
                trusted=j == 0,
            )
            for j in range(spec.spenders)
        )
    wallets = tuple(
        WalletSpec(address=_address(spec.seed, "wallet", i), label=f"wallet-{i}")
        for i in range(spec.wallets)
    )
    return tuple(chains), wallets, tuple(spenders)


class GeneratedLedger:
    """Amounts of a generated scenario, computed from the seed (addresses outside the
    generated world hold and approve nothing)."""

    def __init__(self, scenario: Scenario) -> None:
        spec = scenario.generate
        if spec is None:
            raise ValueError("the scenario is not a generated one")
        seed_key = _mix(spec.seed ^ _GOLDEN)
        self._wallets = {
            w.address: _mix(seed_key ^ (i * _GOLDEN & _M64)) for i, w in enumerate(scenario.wallets)
        }
        self._tokens = {
            (t.chain_id, t.address): _mix(seed_key ^ _mix(t.chain_id << 32 | i))
            for chain in scenario.chains
            for i, t in enumerate(chain.tokens)
        }
        self._spenders = {
            (s.chain_id, s.address): _mix(seed_key ^ _mix(s.chain_id << 40 | i) ^ _ALLOWANCE_SALT)
            for i, s in enumerate(scenario.spenders)
        }
        self._churn = round(spec.churn_fraction * _SCALE)
        self._nonzero = round(spec.nonzero_fraction * _SCALE)
        self._unlimited = round(spec.unlimited_fraction * _SCALE)

    def _draw(self, key: int, poll: int) -> int | None:
        """The position's random word at ``poll``, or None when the position is empty."""
        epoch = ((key & _M32) + (poll - 1) * self._churn) >> 32
        word = _mix((key + epoch * _GOLDEN) & _M64)
        return word if (word & _M32) < self._nonzero else None

    def balance(
        self, chain_id: int, wallet: str, token: TokenSpec, poll: int, elapsed_s: float
    ) -> int:
        wallet_key = self._wallets.get(wallet)
        token_key = self._tokens.get((chain_id, token.address))
        if wallet_key is None or token_key is None:
            return 0
        word = self._draw(_mix(wallet_key ^ token_key ^ _BALANCE_SALT), poll)
        if word is None:
            return 0
        unit: int = 10**token.decimals
        whole = (word >> 32) % 1_000_000 + 1
        return whole * unit + _mix(word) % unit

    def allowance(
        self,
        chain_id: int,
        wallet: str,
        token: TokenSpec,
        spender: str,
        poll: int,
        elapsed_s: float,
    ) -> int:
        wallet_key = self._wallets.get(wallet)
        token_key = self._tokens.get((chain_id, token.address))
        spender_key = self._spenders.get((chain_id, spender))
        if wallet_key is None or token_key is None or spender_key is None:
            return 0
        word = self._draw(_mix(wallet_key ^ token_key ^ spender_key), poll)
        if word is None:
            return 0
        if (word >> 32) < self._unlimited:
            return UINT256_MAX
        unit: int = 10**token.decimals
        return (_mix(word) % 10_000_000 + 1) * unit
