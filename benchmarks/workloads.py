"""The workloads: generated simulator scenarios and how many polls of each kind to measure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEED = 20_260_101


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """One generated portfolio, measured as: a first poll (everything new), ``steady_polls``
    unchanged polls, then, when ``churn_fraction`` is set, ``churn_polls`` polls against the
    same portfolio served with that churn (its first answer equals the unchurned one, so the
    switch itself is one more unchanged poll)."""

    name: str
    chains: tuple[int, ...]
    wallets: int
    tokens: int
    spenders: int
    steady_polls: int
    churn_fraction: float = 0.0
    churn_polls: int = 0
    unlimited_fraction: float = 0.2
    rate_per_s: int = 20
    """R, the rate limit the simulator enforces (large and churn; small runs unlimited)."""

    def scenario(self, *, churn: bool, rate: int | None = None) -> dict[str, Any]:
        """The simulator scenario document (generated mode)."""
        doc: dict[str, Any] = {
            "description": f"benchmark workload {self.name}{' (churn)' if churn else ''}",
            "generate": {
                "seed": SEED,
                "chains": list(self.chains),
                "wallets": self.wallets,
                "tokens": self.tokens,
                "spenders": self.spenders,
                "nonzero_fraction": 1.0,
                "unlimited_fraction": self.unlimited_fraction,
                "churn_fraction": self.churn_fraction if churn else 0.0,
            },
        }
        if rate is not None:
            doc["requests_per_second"] = rate
        return doc

    @property
    def positions_per_poll(self) -> int:
        """(wallet, token, spender) positions a poll reports: every ERC-20 token and the
        native coin, for every wallet and spender on every chain."""
        return len(self.chains) * self.wallets * (self.tokens + 1) * self.spenders

    @property
    def aggregated_requests(self) -> int:
        batches = -(-self.wallets // 50)
        return len(self.chains) * self.spenders * batches

    def describe(self) -> str:
        chains = "chain" if len(self.chains) == 1 else "chains"
        return (
            f"{self.wallets:,} wallets x {self.tokens} tokens x {self.spenders} spenders x "
            f"{len(self.chains)} {chains}: {self.positions_per_poll:,} positions a poll"
        )


SMALL = Workload(
    name="small",
    chains=(1, 8453),
    wallets=10,
    tokens=20,
    spenders=2,
    steady_polls=5,
    churn_fraction=0.05,
    churn_polls=3,
)
"""10 wallets x 20 tokens x 2 spenders x 2 chains (and, so that the smoke test covers the
churn path too, 5% churn for three polls)."""

LARGE = Workload(
    name="large",
    chains=(1,),
    wallets=2_000,
    tokens=50,
    spenders=3,
    steady_polls=1,
    churn_fraction=0.01,
    churn_polls=2,
)
"""2,000 wallets x 50 non-empty tokens x 3 spenders on one chain; ``churn`` is the same
portfolio with 1% of the positions changing at each poll."""

WORKLOADS = {"small": SMALL, "large": LARGE}
