"""Decoding 1inch bodies with orjson: every verdict and message as ``json.loads`` gives them."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.oneinch import parse

W1 = "0x1C17622cfa9B6fD2043A76DfC39A5B5a109aa708"
TOKEN = "0x0d02755a5700414b26ff040e1de35d337df56218"
NATIVE = "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
HUGE = 2**64  # orjson makes every integer outside [-2^63, 2^64) a float

PARSERS: dict[str, Callable[[object], object]] = {
    "aggregated": lambda d: parse.parse_aggregated(d, chain_id=1, wallets=[W1.lower()]),
    "amount_map": parse.parse_amount_map,
    "wallet_amount_maps": parse.parse_wallet_amount_maps,
    "balance_allowance_map": parse.parse_balance_allowance_map,
    "prices": parse.parse_prices,
    "currencies": parse.parse_currencies,
}


def outcome(parse_it: Callable[[], object]) -> object:
    try:
        return ("value", parse_it())
    except parse.NotJson:
        return ("not JSON",)
    except ValueError as exc:  # json's own errors (UnicodeDecodeError included) are ValueErrors
        return ("refused", str(exc))


def as_json_does(raw: bytes, parser: Callable[[object], object]) -> object:
    """What the client did before orjson: ``json.loads``, then the parser."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return ("not JSON",)
    return outcome(lambda: parser(data))


def token(wallets: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"address": TOKEN, "symbol": "BEND", "decimals": 18, "wallets": wallets, **fields}


def test_an_amount_sent_as_a_huge_json_number_is_refused_naming_the_exact_integer() -> None:
    raw = json.dumps([token({W1: {"balance": HUGE, "allowance": "0"}})]).encode()
    with pytest.raises(ValueError, match=rf"balance: .*got {HUGE}$"):
        parse.parse_body(raw, PARSERS["aggregated"])


def test_decimals_sent_as_a_huge_json_number_are_refused_naming_the_exact_integer() -> None:
    raw = json.dumps([token({}, decimals=HUGE + 1)]).encode()
    with pytest.raises(ValueError, match=rf"decimals: out of range 0\.\.255: {HUGE + 1}$"):
        parse.parse_body(raw, PARSERS["aggregated"])


def test_a_price_sent_as_a_huge_json_integer_is_exact() -> None:
    wei = 123456789012345678901234567890
    raw = json.dumps({NATIVE: wei}).encode()
    assert parse.parse_body(raw, parse.parse_prices) == {NATIVE: Decimal(wei)}


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps([token({W1: {"balance": "1", "allowance": "2"}}, symbol="\ud800")]).encode(),
        b"\xef\xbb\xbf" + json.dumps([token({W1: {"balance": "1", "allowance": "2"}})]).encode(),
        json.dumps([token({W1: {"balance": "1", "allowance": "2"}})]).encode("utf-16"),
        json.dumps([token({}, decimals=float("nan"))]).encode(),
        json.dumps([token({}, extra=float("inf"))]).encode(),
    ],
    ids=["lone surrogate", "byte-order mark", "utf-16", "NaN decimals", "Infinity elsewhere"],
)
def test_what_json_accepts_and_orjson_refuses_parses_as_before(raw: bytes) -> None:
    expected = as_json_does(raw, PARSERS["aggregated"])
    assert expected[0] != "not JSON"
    assert outcome(lambda: parse.parse_body(raw, PARSERS["aggregated"])) == expected


@pytest.mark.parametrize("raw", [b"", b"<html>", b'{"a":', b"\xff\xfe\x00", b"[1] x"])
def test_what_json_refuses_is_not_json(raw: bytes) -> None:
    with pytest.raises(parse.NotJson, match=rf"body is not JSON \({len(raw)} bytes\)"):
        parse.parse_body(raw, PARSERS["aggregated"])


def test_nesting_too_deep_for_json_is_not_json_rather_than_a_recursion_error() -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(parse.NotJson):
        parse.parse_body(raw, PARSERS["aggregated"])


def test_a_generated_answer_parses_as_json_parses_it() -> None:
    wallets = {
        "0x" + f"{i:040x}": {"balance": str(i * 10**18), "allowance": str(2**256 - 1 - i)}
        for i in range(50)
    }
    doc = [
        token(wallets, address="0x" + f"{t:040x}", logoURI="https://x", tags=["tokens"])
        for t in range(51)
    ]
    raw = json.dumps(doc).encode()
    parsed = parse.parse_body(raw, PARSERS["aggregated"])
    assert ("value", parsed) == as_json_does(raw, PARSERS["aggregated"])
    assert parsed[3].wallets["0x" + f"{7:040x}"] == parse.BalanceAllowance(
        balance=7 * 10**18, allowance=2**256 - 8
    )


numbers = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(max_value=-(2**63) + 2, min_value=-(2**63) - 2)
    | st.integers(min_value=2**64).map(lambda n: n * 10**60)
    | st.floats()
)
leaves = st.none() | st.booleans() | numbers | st.text(max_size=80)
keys = st.text(max_size=44) | st.sampled_from([W1, W1.lower(), TOKEN, "balance", "allowance"])
documents = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=30,
)
amounts = st.integers(0, 2**256).map(str) | numbers
token_documents = st.lists(
    st.fixed_dictionaries(
        {
            "address": st.sampled_from([TOKEN, NATIVE]) | documents,
            "decimals": st.integers(0, 30) | numbers,
            "wallets": st.dictionaries(
                st.sampled_from([W1, W1.lower(), TOKEN]),
                st.fixed_dictionaries({"balance": amounts, "allowance": amounts}) | documents,
                max_size=3,
            )
            | documents,
        },
        optional={"tags": documents, "extra": documents},
    ),
    max_size=3,
)
price_documents = st.dictionaries(
    st.sampled_from([NATIVE, TOKEN, W1]), amounts | st.decimals().map(str), max_size=3
)


@given(st.one_of(documents, token_documents, price_documents), st.sampled_from(sorted(PARSERS)))
def test_any_document_parses_as_json_parses_it(doc: object, name: str) -> None:
    raw = json.dumps(doc).encode()  # NaN and Infinity included, as json writes them
    expected = as_json_does(raw, PARSERS[name])
    assert outcome(lambda: parse.parse_body(raw, PARSERS[name])) == expected


@given(st.binary(max_size=300), st.sampled_from(sorted(PARSERS)))
def test_any_bytes_parse_as_json_parses_them(raw: bytes, name: str) -> None:
    expected = as_json_does(raw, PARSERS[name])
    assert outcome(lambda: parse.parse_body(raw, PARSERS[name])) == expected
