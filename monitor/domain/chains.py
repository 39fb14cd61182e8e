"""The EVM chains the 1inch Balance API v1.2 serves (NOTES.md, "Chains")."""

from __future__ import annotations

SUPPORTED_CHAINS: dict[int, str] = {
    1: "Ethereum",
    10: "Optimism",
    56: "BNB Chain",
    100: "Gnosis",
    130: "Unichain",
    137: "Polygon",
    146: "Sonic",
    324: "zkSync Era",
    8453: "Base",
    42161: "Arbitrum",
    43114: "Avalanche",
    59144: "Linea",
}
