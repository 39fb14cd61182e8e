"""EVM addresses: validation, the canonical lowercase form, and EIP-55 checksums."""

from __future__ import annotations

import re
from functools import lru_cache

from monitor.domain.keccak import keccak256

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")

NATIVE_TOKEN = "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"  # noqa: S105 - an address
"""1inch's pseudo-address for a chain's native coin (ETH, BNB, ...)."""


class InvalidAddress(ValueError):
    """``text`` is not a usable EVM address; ``reason`` says why."""

    def __init__(self, text: object, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(reason)


@lru_cache(maxsize=16384)
def to_checksum(address: str) -> str:
    """Return the EIP-55 mixed-case form of a 0x-prefixed 40-hex-digit address.

    Memoised: each spelling costs a Keccak-256, and output names the same addresses again and
    again (findings, tables, the status page).
    """
    lower = address[2:].lower()
    digest = keccak256(lower.encode("ascii")).hex()
    return "0x" + "".join(
        ch.upper() if ch.isalpha() and int(digest[i], 16) >= 8 else ch for i, ch in enumerate(lower)
    )


def canonical_address(text: object) -> str:
    """Validate ``text`` and return it lowercase.

    All-lowercase and all-uppercase hex are accepted as they are; mixed case must carry a
    correct EIP-55 checksum, because a wrong one usually means a mistyped address.
    """
    if not isinstance(text, str):
        raise InvalidAddress(text, f"expected an address string, got {type(text).__name__}")
    if not _HEX40.fullmatch(text):
        raise InvalidAddress(text, f"not a valid address (want 0x and 40 hex digits): {text!r}")
    body = text[2:]
    if body != body.lower() and body != body.upper() and to_checksum(text) != text:
        raise InvalidAddress(
            text, f"bad EIP-55 checksum in {text!r} (did you mean {to_checksum(text)}?)"
        )
    return "0x" + body.lower()


def is_address(text: object) -> bool:
    """True when ``text`` looks like an address, ignoring the checksum (for upstream data)."""
    return isinstance(text, str) and _HEX40.fullmatch(text) is not None
