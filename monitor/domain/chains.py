"""The EVM chains the 1inch Balance API v1.2 serves (docs/1inch-notes.md, "Chains"), and
their block explorers."""

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

BLOCK_EXPLORERS: dict[int, str] = {
    1: "https://etherscan.io",
    10: "https://optimistic.etherscan.io",
    56: "https://bscscan.com",
    100: "https://gnosisscan.io",
    130: "https://uniscan.xyz",
    137: "https://polygonscan.com",
    146: "https://sonicscan.org",
    324: "https://explorer.zksync.io",
    8453: "https://basescan.org",
    42161: "https://arbiscan.io",
    43114: "https://snowtrace.io",
    59144: "https://lineascan.build",
}
"""Each supported chain's block explorer; every one serves an address at ``/address/0x…``."""


def chain_name(chain_id: int) -> str:
    """The chain's name, or ``chain ID`` for one this table does not know."""
    return SUPPORTED_CHAINS.get(chain_id) or f"chain {chain_id}"


def explorer_address_url(chain_id: int, address: str) -> str | None:
    """The block explorer's page of ``address`` on the chain, or None for an unknown chain."""
    base = BLOCK_EXPLORERS.get(chain_id)
    return f"{base}/address/{address}" if base else None
