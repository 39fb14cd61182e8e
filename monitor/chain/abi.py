"""The ABI of what the chain reader calls and reads: ERC-20 ``Approval`` logs, the ERC-20 view
functions, and Multicall3's ``aggregate3`` and ``getEthBalance``.

Encoding and decoding go through ``eth-abi``, except on the hot path of a poll: a uint256 word
is read with ``int.from_bytes``, and an ``aggregate3`` answer in the canonical layout is sliced
by hand (anything else still goes to eth-abi). Selectors are Keccak-256 of the signature
(pycryptodome's C implementation, :mod:`monitor.domain.keccak`).

The decoders are tolerant of what a hostile or broken contract answers: they return None for
anything that is not the documented answer, and never raise. A uint256 answer must be exactly
one 32-byte word. Solidity's own decoder would accept a longer answer and read its first word,
but a contract whose fallback echoes its calldata answers ``allowance()`` with 68 bytes that
begin with the selector: read as a first word, that is an allowance of about 2**255. Real
ERC-20s answer exactly 32 bytes; anything else is unreadable, which is shown and counted,
never mistaken for an allowance.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from monitor.domain.keccak import keccak256


def selector(signature: str) -> bytes:
    """The 4-byte function selector of ``signature`` (``"balanceOf(address)"``)."""
    return keccak256(signature.encode("ascii"))[:4]


APPROVAL_TOPIC0: Final = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
"""topic0 of ``Approval(address,address,uint256)``: ERC-20's (3 topics) and ERC-721's (4)."""

MULTICALL3_ADDRESS: Final = "0xca11bde05977b3631167028862be2a173976ca11"
"""Multicall3's canonical address, the same on every chain where it is deployed."""

ALLOWANCE: Final = selector("allowance(address,address)")
BALANCE_OF: Final = selector("balanceOf(address)")
TOTAL_SUPPLY: Final = selector("totalSupply()")
DECIMALS: Final = selector("decimals()")
SYMBOL: Final = selector("symbol()")
NAME: Final = selector("name()")
AGGREGATE3: Final = selector("aggregate3((address,bool,bytes)[])")
GET_ETH_BALANCE: Final = selector("getEthBalance(address)")
NO_SUCH_FUNCTION: Final = selector("exposureMonitorNoSuchFunction()")
"""A selector no contract implements on purpose: a contract that answers it with a word answers
anything with a word (a catch-all fallback), so its ``allowance()`` means nothing."""

MAX_TEXT_CHARS: Final = 256
"""Longest ``symbol()``/``name()`` kept; a longer one is treated as garbage."""

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_WORD = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS_TOPIC = re.compile(r"0x0{24}([0-9a-fA-F]{40})")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
# Control characters, and the bidirectional overrides and isolates that make a symbol read
# as another one (a known spoofing trick in token names).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_AGGREGATE3_CALLS = ("(address,bool,bytes)[]",)
_AGGREGATE3_RESULTS = ("(bool,bytes)[]",)
_WORD_BYTES = 32


def _address(address: str) -> str:
    """``address`` lowercased, after checking it is ``0x`` and 40 hex digits."""
    if not _ADDRESS.fullmatch(address):
        raise ValueError(f"{address!r}: not a 20-byte hex address")
    return address.lower()


# --- Approval logs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalLog:
    """One ERC-20 ``Approval(owner, spender, value)`` log. Addresses are lowercase.

    ``value`` is what the event says was approved, None when its data is not one 32-byte
    word. It is history, not the allowance: ``transferFrom`` lowers an allowance without any
    event, so the live ``allowance()`` is the truth. ``removed`` is true for a log that a
    reorg took out of the chain (eth_getLogs and subscriptions report those).
    """

    token: str
    owner: str
    spender: str
    value: int | None
    block_number: int
    log_index: int
    tx_hash: str
    removed: bool


def _topics(log: Mapping[str, Any]) -> list[str] | None:
    topics = log.get("topics")
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        return None
    return topics


def _quantity(value: object) -> int | None:
    if isinstance(value, str) and _QUANTITY.fullmatch(value):
        return int(value, 16)
    return None


def decode_approval_log(log: Mapping[str, Any]) -> ApprovalLog | None:
    """The ERC-20 approval in ``log`` (a raw log object as ``eth_getLogs`` answers it).

    None for anything else: another event, an ERC-721 ``Approval`` (four topics), a pending
    log without a block number, a topic that is not a zero-padded address, a malformed field.
    """
    topics = _topics(log)
    if topics is None or len(topics) != 3 or topics[0].lower() != APPROVAL_TOPIC0:
        return None
    owner = _ADDRESS_TOPIC.fullmatch(topics[1])
    spender = _ADDRESS_TOPIC.fullmatch(topics[2])
    token = log.get("address")
    tx_hash = log.get("transactionHash")
    block_number = _quantity(log.get("blockNumber"))
    log_index = _quantity(log.get("logIndex"))
    removed = log.get("removed", False)
    if (
        owner is None
        or spender is None
        or not isinstance(token, str)
        or not _ADDRESS.fullmatch(token)
        or not isinstance(tx_hash, str)
        or not _HASH.fullmatch(tx_hash)
        or block_number is None
        or log_index is None
        or not isinstance(removed, bool)
    ):
        return None
    data = hex_bytes(log.get("data"))
    value = decode_uint256(data) if data is not None else None
    return ApprovalLog(
        token=token.lower(),
        owner="0x" + owner.group(1).lower(),
        spender="0x" + spender.group(1).lower(),
        value=value,
        block_number=block_number,
        log_index=log_index,
        tx_hash=tx_hash.lower(),
        removed=removed,
    )


def is_nft_approval(log: Mapping[str, Any]) -> bool:
    """Whether ``log`` is an ERC-721 ``Approval`` (same topic0 as ERC-20's, four topics)."""
    topics = _topics(log)
    return topics is not None and len(topics) == 4 and topics[0].lower() == APPROVAL_TOPIC0


def encode(types: Sequence[str], args: Sequence[Any]) -> bytes:
    """``eth_abi``'s ``encode``, imported on first use: eth_abi and the eth_utils stack it
    brings took 0.6-0.7 s of CPU to import here, which every process that reads no chain
    (``once`` and ``run`` without discovery, every other command) would pay at start."""
    from eth_abi.abi import encode as eth_abi_encode

    return eth_abi_encode(types, args)


def decode(types: Sequence[str], data: bytes, *, strict: bool = True) -> tuple[Any, ...]:
    """``eth_abi``'s ``decode``, imported on first use (see ``encode``)."""
    from eth_abi.abi import decode as eth_abi_decode

    return eth_abi_decode(types, data, strict=strict)


def topic_for_address(address: str) -> str:
    """``address`` as a log topic: 32 bytes, left-padded with zeros, lowercase hex."""
    return "0x" + encode(("address",), (_address(address),)).hex()


# --- Calls ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=65_536)
def _address_argument(address: str) -> bytes:
    """``address`` ABI-encoded as an argument (one word).

    Static arguments lie head to head in calldata, so ``allowance(a, b)``'s arguments are the
    words of ``a`` and ``b`` joined. A poll encodes the same few thousand wallets and
    spenders tens of thousands of times, and eth-abi takes ~10 µs an address: each word is
    encoded once and remembered."""
    return encode(("address",), (_address(address),))


def encode_allowance(owner: str, spender: str) -> bytes:
    """Calldata of ``allowance(owner, spender)``."""
    return ALLOWANCE + _address_argument(owner) + _address_argument(spender)


def encode_balance_of(owner: str) -> bytes:
    """Calldata of ``balanceOf(owner)``."""
    return BALANCE_OF + _address_argument(owner)


def encode_get_eth_balance(address: str) -> bytes:
    """Calldata of Multicall3's ``getEthBalance(address)``: the native balance, as a call."""
    return GET_ETH_BALANCE + _address_argument(address)


def encode_aggregate3(calls: Sequence[tuple[str, bytes]]) -> bytes:
    """Calldata of Multicall3's ``aggregate3`` over ``(target, calldata)`` pairs, each with
    ``allowFailure`` true: a call that reverts fails alone, not the whole aggregate."""
    return AGGREGATE3 + encode(
        _AGGREGATE3_CALLS, ([(_address(target), True, data) for target, data in calls],)
    )


# --- Answers -------------------------------------------------------------------------------


def hex_bytes(text: object) -> bytes | None:
    """The bytes of a ``0x`` hex string (an ``eth_call`` result), None if it is not one."""
    if not isinstance(text, str) or not text.startswith(("0x", "0X")) or len(text) % 2:
        return None
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        return None


def decode_uint256(data: bytes) -> int | None:
    """The uint256 in ``data`` if it is exactly one 32-byte word, else None (see module doc).

    Any 32 bytes are a uint256 (big-endian), so the word is read directly: eth-abi's decoder
    costs ~20x as much, which counts at 31,000 answers a poll."""
    if len(data) != _WORD_BYTES:
        return None
    return int.from_bytes(data, "big")


def decode_decimals(data: bytes) -> int | None:
    """The answer of ``decimals()``: one word holding 0..255 (a uint8), else None."""
    value = decode_uint256(data)
    return value if value is not None and value <= 255 else None


def _clean_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or len(text) > MAX_TEXT_CHARS or _UNPRINTABLE.search(text):
        return None
    return text


def decode_text(data: bytes) -> str | None:
    """The answer of ``symbol()`` or ``name()``: an ABI ``string``, or a ``bytes32`` as early
    tokens (MKR, SAI) answer, its trailing zero bytes stripped.

    None for a revert's empty answer, an empty text, bytes that are not UTF-8, control or
    bidirectional-override characters, or a text over :data:`MAX_TEXT_CHARS` characters.
    """
    if len(data) == _WORD_BYTES:
        return _clean_text(data.rstrip(b"\x00"))
    if len(data) < 2 * _WORD_BYTES or len(data) % _WORD_BYTES:
        return None
    try:
        raw: bytes = decode(("bytes",), data, strict=False)[0]
    except Exception:  # eth-abi raises several kinds on garbage; any of them means None
        return None
    return _clean_text(raw)


def decode_aggregate3(data: bytes) -> list[tuple[bool, bytes]] | None:
    """The ``(success, returnData)`` results of an ``aggregate3`` answer, None if malformed.

    An answer in the canonical layout (every offset where Solidity's encoder puts it, flags 0
    or 1, zero padding, nothing after the last item: what Multicall3 answers) is sliced by
    hand; anything else goes through eth-abi's decoder, which takes ~15x as long but judges
    every odd layout, so both paths agree on every input (the tests check it)."""
    results = _sliced_aggregate3(data)
    if results is not None:
        return results
    try:
        (decoded,) = decode(_AGGREGATE3_RESULTS, data)
    except Exception:  # any decoding failure of the whole answer
        return None
    return [(bool(success), bytes(answer)) for success, answer in decoded]


_HEAD_OFFSET: Final = (0x20).to_bytes(_WORD_BYTES, "big")
"""The array's offset, first word of an ``aggregate3`` answer: right after itself."""
_RESULT_DATA_OFFSET: Final = (0x40).to_bytes(_WORD_BYTES, "big")
"""``returnData``'s offset inside a ``(bool, bytes)`` result: after its two head words."""
_TRUE_WORD: Final = (1).to_bytes(_WORD_BYTES, "big")
_FALSE_WORD: Final = bytes(_WORD_BYTES)


def _sliced_aggregate3(data: bytes) -> list[tuple[bool, bytes]] | None:
    """``(bool, bytes)[]`` in ``data`` if it is in the canonical layout, else None (then
    eth-abi decides). Bounds are checked before every slice; nothing here raises."""
    size = len(data)
    if size < 2 * _WORD_BYTES or data[:_WORD_BYTES] != _HEAD_OFFSET:
        return None
    base = 2 * _WORD_BYTES  # offsets in the array's head count from here
    count = int.from_bytes(data[_WORD_BYTES:base], "big")
    if base + count * 3 * _WORD_BYTES > size:  # each result takes at least three words
        return None
    from_bytes = int.from_bytes
    results: list[tuple[bool, bytes]] = []
    offset = count * _WORD_BYTES  # where the first result must start
    for index in range(count):
        head = base + index * _WORD_BYTES
        if from_bytes(data[head : head + _WORD_BYTES], "big") != offset:
            return None
        item = base + offset
        start = item + 3 * _WORD_BYTES
        if start > size:
            return None
        flag = data[item : item + _WORD_BYTES]
        if flag == _TRUE_WORD:
            success = True
        elif flag == _FALSE_WORD:
            success = False
        else:
            return None
        if data[item + _WORD_BYTES : item + 2 * _WORD_BYTES] != _RESULT_DATA_OFFSET:
            return None
        length = from_bytes(data[item + 2 * _WORD_BYTES : start], "big")
        end = start + length
        padded = start + -(-length // _WORD_BYTES) * _WORD_BYTES
        if padded > size or any(data[end:padded]):
            return None
        results.append((success, data[start:end]))
        offset = padded - base
    return results if base + offset == size else None


def is_word(data: bytes) -> bool:
    """Whether ``data`` is one 32-byte word: the shape of a uint256 answer."""
    return len(data) == _WORD_BYTES
