"""monitor.chain.abi: selectors, Approval logs, call encoders and the tolerant decoders."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from eth_abi.abi import decode, encode
from hypothesis import given
from hypothesis import strategies as st

from monitor.chain import abi
from monitor.chain.abi import (
    APPROVAL_TOPIC0,
    MULTICALL3_ADDRESS,
    ApprovalLog,
    decode_aggregate3,
    decode_approval_log,
    decode_decimals,
    decode_text,
    decode_uint256,
    encode_aggregate3,
    encode_allowance,
    encode_balance_of,
    encode_get_eth_balance,
    is_nft_approval,
    selector,
    topic_for_address,
)
from monitor.domain.keccak import keccak256

OWNER = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
SPENDER = "0x1111111254eeb25477b68fb85ed929f73a960582"
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
MAX = 2**256 - 1


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


# --- selectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "signature", "expected"),
    [
        ("ALLOWANCE", "allowance(address,address)", "dd62ed3e"),
        ("BALANCE_OF", "balanceOf(address)", "70a08231"),
        ("AGGREGATE3", "aggregate3((address,bool,bytes)[])", "82ad56cb"),
        ("GET_ETH_BALANCE", "getEthBalance(address)", "4d2301cc"),
        ("DECIMALS", "decimals()", "313ce567"),
        ("SYMBOL", "symbol()", "95d89b41"),
        ("NAME", "name()", "06fdde03"),
        ("TOTAL_SUPPLY", "totalSupply()", "18160ddd"),
    ],
)
def test_selectors_match_the_published_ones(name: str, signature: str, expected: str) -> None:
    assert getattr(abi, name).hex() == expected
    assert selector(signature).hex() == expected


def test_approval_topic0_is_the_keccak_of_the_event_signature() -> None:
    assert "0x" + keccak256(b"Approval(address,address,uint256)").hex() == APPROVAL_TOPIC0


def test_the_probe_selector_is_none_of_the_erc20_ones() -> None:
    erc20 = {abi.ALLOWANCE, abi.BALANCE_OF, abi.DECIMALS, abi.SYMBOL, abi.NAME, abi.TOTAL_SUPPLY}
    assert abi.NO_SUCH_FUNCTION not in erc20
    assert len(abi.NO_SUCH_FUNCTION) == 4


# --- Approval logs ------------------------------------------------------------------------


def raw_log(**changes: Any) -> dict[str, Any]:
    """An Approval log exactly as eth_getLogs answers it (a USDT approval, checksummed
    address as some nodes give it)."""
    log: dict[str, Any] = {
        "address": "0xdAC17F958D2ee523a2206206994597C13D831ec7",
        "topics": [
            APPROVAL_TOPIC0,
            "0x0000000000000000000000005aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "0x0000000000000000000000001111111254eeb25477b68fb85ed929f73a960582",
        ],
        "data": "0x" + "ff" * 32,
        "blockNumber": "0x1176592",
        "transactionHash": "0x7A1B0D6B0C7C7C4C6D0BBD2F3E2AD1A5C5B8F7E12F4C33B5E4F3E2D1C0B0A9F8",
        "transactionIndex": "0x5d",
        "blockHash": "0x3f7b6d1d8d9e0c4b5a6f7e8d9c0b1a2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b",
        "logIndex": "0x12f",
        "removed": False,
    }
    log.update(changes)
    return log


def test_an_erc20_approval_log_decodes_with_lowercase_addresses() -> None:
    assert decode_approval_log(raw_log()) == ApprovalLog(
        token=USDT,
        owner=OWNER,
        spender=SPENDER,
        value=MAX,
        block_number=0x1176592,
        log_index=0x12F,
        tx_hash="0x7a1b0d6b0c7c7c4c6d0bbd2f3e2ad1a5c5b8f7e12f4c33b5e4f3e2d1c0b0a9f8",
        removed=False,
    )


def test_a_finite_value_and_a_removed_log_are_kept_as_they_are() -> None:
    log = decode_approval_log(raw_log(data="0x" + word(1_500_000).hex(), removed=True))
    assert log is not None
    assert (log.value, log.removed) == (1_500_000, True)


@pytest.mark.parametrize("data", ["0x", "0x" + "00" * 31, "0x" + "00" * 64, "0xzz", None])
def test_an_approval_whose_data_is_not_one_word_has_no_value(data: str | None) -> None:
    log = decode_approval_log(raw_log(data=data))
    assert log is not None
    assert log.value is None


def test_a_log_without_removed_is_not_removed() -> None:
    log = raw_log()
    del log["removed"]
    decoded = decode_approval_log(log)
    assert decoded is not None
    assert decoded.removed is False


@pytest.mark.parametrize(
    "changes",
    [
        {"topics": [APPROVAL_TOPIC0, "0x" + "00" * 12 + OWNER[2:]]},  # two topics
        {
            "topics": [
                APPROVAL_TOPIC0,
                "0x" + "00" * 12 + OWNER[2:],
                "0x" + "00" * 12 + SPENDER[2:],
                "0x" + "00" * 31 + "07",
            ]
        },
        {
            "topics": [
                "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
                "0x" + "00" * 12 + OWNER[2:],
                "0x" + "00" * 12 + SPENDER[2:],
            ]
        },
        {
            "topics": [
                APPROVAL_TOPIC0,
                "0x" + "ff" * 12 + OWNER[2:],
                "0x" + "00" * 12 + SPENDER[2:],
            ]
        },  # dirty upper bytes
        {"topics": [APPROVAL_TOPIC0, "0x" + "00" * 12 + OWNER[2:], "0x1234"]},
        {"topics": "not a list"},
        {"topics": [APPROVAL_TOPIC0, 5, 6]},
        {"address": "0x1234"},
        {"address": None},
        {"blockNumber": None},  # pending
        {"blockNumber": "12"},
        {"logIndex": None},
        {"transactionHash": "0x12"},
        {"removed": "false"},
    ],
)
def test_anything_but_a_three_topic_approval_is_none(changes: dict[str, Any]) -> None:
    assert decode_approval_log(raw_log(**changes)) is None


def test_topic0_is_matched_whatever_its_case() -> None:
    log = raw_log()
    log["topics"] = [APPROVAL_TOPIC0.upper().replace("0X", "0x"), *log["topics"][1:]]
    assert decode_approval_log(log) is not None


def test_an_erc721_approval_has_four_topics_and_is_no_erc20_approval() -> None:
    nft = raw_log(data="0x")
    nft["topics"] = [*nft["topics"], "0x" + word(42).hex()]
    assert is_nft_approval(nft)
    assert decode_approval_log(nft) is None
    assert not is_nft_approval(raw_log())
    other = raw_log()
    other["topics"] = ["0x" + "00" * 32, *nft["topics"][1:]]
    assert not is_nft_approval(other)


def test_topic_for_address_is_the_left_padded_lowercase_address() -> None:
    assert topic_for_address("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED") == (
        "0x000000000000000000000000" + OWNER[2:]
    )
    assert topic_for_address(OWNER) == raw_log()["topics"][1]


def test_topic_for_a_non_address_names_it() -> None:
    with pytest.raises(ValueError, match="0x1234"):
        topic_for_address("0x1234")


# --- calls --------------------------------------------------------------------------------


def test_call_encoders_round_trip_through_eth_abi() -> None:
    data = encode_allowance(OWNER.upper().replace("0X", "0x"), SPENDER)
    assert data[:4].hex() == "dd62ed3e"
    assert decode(["address", "address"], data[4:]) == (OWNER, SPENDER)
    assert encode_balance_of(OWNER) == bytes.fromhex("70a08231") + bytes(12) + bytes.fromhex(
        OWNER[2:]
    )
    assert encode_get_eth_balance(OWNER)[:4].hex() == "4d2301cc"
    assert decode(["address"], encode_get_eth_balance(OWNER)[4:]) == (OWNER,)


def test_aggregate3_calldata_matches_the_abi_layout() -> None:
    data = encode_aggregate3([(USDT, abi.DECIMALS)])
    expected = (
        "82ad56cb"
        + word(0x20).hex()  # offset of the array
        + word(1).hex()  # its length
        + word(0x20).hex()  # offset of the tuple
        + "00" * 12 + USDT[2:]  # target
        + word(1).hex()  # allowFailure
        + word(0x60).hex()  # offset of callData
        + word(4).hex()  # its length
        + "313ce567" + "00" * 28
    )  # fmt: skip
    assert data.hex() == expected


def test_aggregate3_calls_all_allow_failure() -> None:
    calls = [(USDT, encode_balance_of(OWNER)), (MULTICALL3_ADDRESS, encode_get_eth_balance(OWNER))]
    (decoded,) = decode(["(address,bool,bytes)[]"], encode_aggregate3(calls)[4:])
    assert decoded == ((USDT, True, calls[0][1]), (MULTICALL3_ADDRESS, True, calls[1][1]))


def test_aggregate3_results_round_trip() -> None:
    results = [(True, word(7)), (False, b""), (True, b"\x01\x02\x03")]
    assert decode_aggregate3(encode(["(bool,bytes)[]"], [results])) == results
    assert decode_aggregate3(encode(["(bool,bytes)[]"], [[]])) == []


@pytest.mark.parametrize(
    "data", [b"", b"\x00" * 31, word(0x20), word(0x20) + word(5), b"\xff" * 64]
)
def test_a_malformed_aggregate3_answer_is_none(data: bytes) -> None:
    assert decode_aggregate3(data) is None


def eth_abi_results(data: bytes) -> list[tuple[bool, bytes]] | None:
    """eth-abi's own reading of an ``aggregate3`` answer: what ``decode_aggregate3`` must
    answer, whichever way it reads it."""
    try:
        (results,) = decode(["(bool,bytes)[]"], data)
    except Exception:
        return None
    return [(bool(success), bytes(answer)) for success, answer in results]


AGGREGATE3_RESULTS = st.lists(st.tuples(st.booleans(), st.binary(max_size=70)), max_size=6)


@given(AGGREGATE3_RESULTS)
def test_any_aggregate3_answer_decodes_to_its_results(results: list[tuple[bool, bytes]]) -> None:
    assert decode_aggregate3(encode(["(bool,bytes)[]"], [results])) == results


@given(AGGREGATE3_RESULTS, st.data())
def test_a_damaged_aggregate3_answer_reads_as_eth_abi_reads_it(
    results: list[tuple[bool, bytes]], data: st.DataObject
) -> None:
    """One byte of a real answer changed anywhere (an offset, a length, a flag, the padding,
    the data): the same results or None as eth-abi's decoder, never an exception."""
    answer = bytearray(encode(["(bool,bytes)[]"], [results]))
    at = data.draw(st.integers(min_value=0, max_value=len(answer) - 1))
    answer[at] = data.draw(st.integers(min_value=0, max_value=255))
    assert decode_aggregate3(bytes(answer)) == eth_abi_results(bytes(answer))


def _reversed_layout() -> bytes:
    """Two results whose heads point at them in reverse order: valid ABI, not canonical."""
    first = word(1) + word(0x40) + word(32) + word(7)  # (true, word 7)
    second = word(0) + word(0x40) + word(0)  # (false, empty)
    return word(0x20) + word(2) + word(0x40 + len(second)) + word(0x40) + second + first


def test_a_canonical_aggregate3_answer_is_sliced_without_eth_abi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What Multicall3 answers is read by hand (eth-abi's decoder costs ~15x as much, at
    thousands of results a poll); eth-abi is only for odd layouts."""
    results = [(True, word(i)) for i in range(1000)] + [(False, b""), (True, b"\x01\x02")]
    answer = encode(["(bool,bytes)[]"], [results])

    def no_eth_abi(*args: object, **kwargs: object) -> object:
        raise AssertionError("eth-abi's decoder was used")

    monkeypatch.setattr(abi, "decode", no_eth_abi)
    assert decode_aggregate3(answer) == results


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (_reversed_layout(), [(True, word(7)), (False, b"")]),
        (encode(["(bool,bytes)[]"], [[(True, word(7))]]) + word(0), [(True, word(7))]),
        # a returnData length far past the end
        (word(0x20) + word(1) + word(0x20) + word(1) + word(0x40) + word(2**255), None),
        # a success flag that is no bool
        (word(0x20) + word(1) + word(0x20) + word(2) + word(0x40) + word(0), None),
        # a result count far past the end
        (word(0x20) + word(2**64) + word(0x20), None),
        # returnData's padding not zero
        (word(0x20) + word(1) + word(0x20) + word(1) + word(0x40) + word(1) + b"\x07" * 32, None),
    ],
    ids=["reversed-offsets", "trailing-word", "length-past-end", "flag-2", "count", "padding"],
)
def test_odd_aggregate3_layouts_read_as_eth_abi_reads_them(
    answer: bytes, expected: list[tuple[bool, bytes]] | None
) -> None:
    assert eth_abi_results(answer) == expected  # the reference itself
    assert decode_aggregate3(answer) == expected


# --- answers ------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=MAX))
def test_uint256_round_trips(value: int) -> None:
    assert decode_uint256(encode(["uint256"], [value])) == value


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01" * 31, word(5) + b"\x00", word(5) * 2, bytes.fromhex("dd62ed3e") + word(1) * 2],
)
def test_a_uint256_answer_must_be_exactly_one_word(data: bytes) -> None:
    assert decode_uint256(data) is None


def test_decimals_is_a_uint8() -> None:
    assert decode_decimals(word(18)) == 18
    assert decode_decimals(word(0)) == 0
    assert decode_decimals(word(255)) == 255
    assert decode_decimals(word(256)) is None
    assert decode_decimals(word(18) + word(0)) is None
    assert decode_decimals(b"") is None


def test_text_reads_an_abi_string() -> None:
    assert decode_text(encode(["string"], ["USD Coin"])) == "USD Coin"
    assert decode_text(encode(["string"], ["Ünïcödé 🦄"])) == "Ünïcödé 🦄"


def test_text_reads_a_bytes32_with_its_trailing_zeros_stripped() -> None:
    assert decode_text(b"MKR".ljust(32, b"\x00")) == "MKR"
    assert decode_text(b"Maker".ljust(32, b"\x00")) == "Maker"
    assert decode_text(b"A" * 32) == "A" * 32


@pytest.mark.parametrize(
    "data",
    [
        b"",  # a revert's answer, or no code
        bytes(32),  # an empty bytes32
        encode(["string"], [""]),
        b"\xff\xfe".ljust(32, b"\x00"),  # not UTF-8
        encode(["bytes"], [b"\xff\xfe\xfd"]),
        b"MK\x00R".ljust(32, b"\x00"),  # a NUL inside
        encode(["string"], ["USD\nC"]),
        encode(["string"], ["USDC\u202e"]),  # right-to-left override
        encode(["string"], ["x" * 257]),
        word(0x20) + word(1000),  # length past the end
        word(0x20),  # a bytes32 of leading NULs and a space
        b"\x00" * 31 + b"\x01",
        word(0x20) + word(3) + b"abc",  # not padded to a word
    ],
)
def test_garbage_text_is_none(data: bytes) -> None:
    assert decode_text(data) is None


@given(st.binary(max_size=200))
def test_decoders_never_raise(data: bytes) -> None:
    decode_text(data)
    decode_uint256(data)
    decode_decimals(data)
    decode_aggregate3(data)


def test_commands_that_read_no_chain_do_not_import_the_abi_codec() -> None:
    """eth_abi (with eth_utils and pydantic) takes about 0.25 s of CPU to import: ``once``,
    ``run`` and the other commands load it only when the chain reader first encodes or
    decodes."""
    probe = (
        "import sys, monitor.cli, monitor.commands.poll, monitor.daemon.run, monitor.runtime\n"
        "loaded = sorted(m for m in ('eth_abi', 'eth_utils') if m in sys.modules)\n"
        "from monitor.chain.abi import encode_balance_of\n"
        "encode_balance_of('0x' + '11' * 20)\n"
        "print(loaded, 'eth_abi' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "True"]
