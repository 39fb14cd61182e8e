"""Parsing 1inch answers: tolerant of 1inch's inconsistencies, strict about amounts."""

from __future__ import annotations

import contextlib
import copy
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from monitor.domain.model import UINT256_MAX, parse_amount
from monitor.oneinch import parse

W1 = "0x1C17622cfa9B6fD2043A76DfC39A5B5a109aa708"
W2 = "0x28C6c06298d514Db089934071355E5743bf21d60"
MAX = str(UINT256_MAX)

# docs/1inch-notes.md: transcribed from 1inch's SDK fixture (filterEmpty=true, two wallets).
SDK_FIXTURE: list[dict[str, Any]] = [
    {"address": "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "decimals": 18, "isCustom": False,
     "logoURI": "https://tokens.1inch.io/0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.png",
     "name": "Ether", "symbol": "ETH", "tags": ["native", "PEG:ETH"], "tracked": True, "type": "ethereum",
     "wallets": {W1: {"balance": "18920076738417670657", "allowance": MAX},
                 W2: {"balance": "45363705428251046849847", "allowance": MAX}}},
    {"address": "0x0d02755a5700414b26ff040e1de35d337df56218", "decimals": 18, "isCustom": False,
     "logoURI": "https://tokens.1inch.io/0x0d02755a5700414b26ff040e1de35d337df56218.png",
     "name": "Bend Token", "symbol": "BEND", "tracked": True, "type": "token",
     "wallets": {W1: {"balance": "2000000000000000000", "allowance": "0"},
                 W2: {"balance": "5000000000000000000", "allowance": "0"}}},
]  # fmt: skip


def test_parses_the_sdk_fixture_with_checksum_wallet_keys_and_missing_tags() -> None:
    tokens = parse.parse_aggregated(SDK_FIXTURE, chain_id=1)
    eth, bend = tokens
    assert eth.token.is_native
    assert eth.token.symbol == "ETH"
    assert eth.wallets[W1.lower()].balance == 18920076738417670657
    assert eth.wallets[W2.lower()].allowance == UINT256_MAX
    assert bend.token.tags == ()
    assert bend.token.decimals == 18
    assert set(bend.wallets) == {W1.lower(), W2.lower()}


def test_wallets_null_and_missing_tracked_and_extra_fields_are_tolerated() -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    doc[1]["wallets"] = None
    del doc[1]["tracked"]
    doc[1]["surprise"] = {"new": "field"}
    tokens = parse.parse_aggregated(doc, chain_id=1)
    assert tokens[1].wallets == {}
    assert tokens[1].wallets_known is False  # null says nothing; it is not "holds nothing"
    assert tokens[0].wallets_known is True
    assert tokens[1].tracked is None


@pytest.mark.parametrize("bad", ["12.5", "1e18", "-1", "", " 1", "abc", 12, 1.5, None, str(2**256)])
def test_a_bad_amount_is_an_error_never_a_silent_zero(bad: object) -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    doc[1]["wallets"][W1]["allowance"] = bad
    with pytest.raises(ValueError, match=r"allowance"):
        parse.parse_aggregated(doc, chain_id=1)


def test_amounts_up_to_uint256_max_are_exact() -> None:
    assert parse.parse_amount_map({"0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee": MAX}) == {
        "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee": UINT256_MAX
    }


def test_one_wallet_in_two_letter_cases_is_refused() -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    doc[1]["wallets"][W1.lower()] = {"balance": "1", "allowance": "1"}
    with pytest.raises(ValueError, match="appears twice"):
        parse.parse_aggregated(doc, chain_id=1)


def test_a_token_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        parse.parse_aggregated([SDK_FIXTURE[1], SDK_FIXTURE[1]], chain_id=1)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.update(address="0xnope"), "address"),
        (lambda t: t.update(decimals="18"), "decimals"),
        (lambda t: t.update(decimals=18.5), "decimals"),
        (lambda t: t.update(tags="native"), "tags"),
        (lambda t: t.update(wallets=[]), "wallets"),
        (lambda t: t.update(symbol=5), "symbol"),
    ],
)
def test_malformed_token_fields_are_named(mutate: Any, message: str) -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    mutate(doc[1])
    with pytest.raises(ValueError, match=message):
        parse.parse_aggregated(doc, chain_id=1)


def test_null_symbol_and_float_decimals_are_tolerated() -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    doc[1]["symbol"] = None
    doc[1]["decimals"] = 18.0
    token = parse.parse_aggregated(doc, chain_id=1)[1].token
    assert (token.symbol, token.decimals) == ("", 18)


def test_answer_must_be_an_array() -> None:
    with pytest.raises(ValueError, match="array"):
        parse.parse_aggregated({"tokens": []}, chain_id=1)


def test_wallet_amount_maps_and_balance_allowance_maps() -> None:
    token = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
    assert parse.parse_wallet_amount_maps({W1: {token: "5"}}) == {W1.lower(): {token.lower(): 5}}
    parsed = parse.parse_balance_allowance_map({token: {"balance": "1", "allowance": MAX}})
    assert parsed[token.lower()] == parse.BalanceAllowance(balance=1, allowance=UINT256_MAX)
    with pytest.raises(ValueError, match="balance"):
        parse.parse_balance_allowance_map({token: {"allowance": "1"}})


def test_prices_are_exact_decimals() -> None:
    prices = parse.parse_prices(
        {
            "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee": "1000000000000000000",
            "0x111111111117dc0aa78b770fa6a738034120c302": "3521.48",
        }
    )
    assert prices["0x111111111117dc0aa78b770fa6a738034120c302"] == Decimal("3521.48")
    for bad in ("NaN", "-1", "abc", None):
        with pytest.raises(ValueError):
            parse.parse_prices({"0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee": bad})


def test_currencies() -> None:
    assert parse.parse_currencies({"codes": ["USD", "EUR"]}) == ("USD", "EUR")
    with pytest.raises(ValueError, match="codes"):
        parse.parse_currencies({"codes": "USD"})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"statusCode": 400, "error": "Bad Request", "description": "bad wallet", "meta": []}, "bad wallet"),
        ({"statusCode": 400, "message": "wallets must be addresses", "error": "Bad Request"}, "wallets must be addresses"),
        ({"statusCode": 401}, None),
        ("<html>", None),
    ],
)  # fmt: skip
def test_both_error_body_shapes(body: object, expected: str | None) -> None:
    assert parse.describe_error_body(body) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=44), children, max_size=4)
    ),
    max_leaves=30,
)


@given(json_values)
def test_any_json_parses_to_a_typed_result_or_a_value_error(data: object) -> None:
    for parser in (
        lambda d: parse.parse_aggregated(d, chain_id=1),
        parse.parse_amount_map,
        parse.parse_wallet_amount_maps,
        parse.parse_balance_allowance_map,
        parse.parse_prices,
        parse.parse_currencies,
    ):
        with contextlib.suppress(ValueError):
            parser(data)


addresses = st.from_regex(r"0x[0-9a-fA-F]{40}", fullmatch=True)
amounts = st.integers(0, UINT256_MAX).map(str)
wallet_entries = (
    st.fixed_dictionaries({"balance": amounts | json_values, "allowance": amounts | json_values})
    | json_values
)
token_objects = st.fixed_dictionaries(
    {
        "address": addresses | json_values,
        "decimals": st.integers(0, 30) | json_values,
        "symbol": st.text(max_size=20) | json_values,
        "wallets": st.dictionaries(addresses, wallet_entries, max_size=3) | json_values,
    },
    optional={"tags": st.lists(st.text(max_size=8)) | json_values, "tracked": json_values},
)


@given(st.lists(token_objects, max_size=4))
def test_token_shaped_fuzz_parses_or_raises_value_error(data: list[dict[str, Any]]) -> None:
    try:
        tokens = parse.parse_aggregated(data, chain_id=1)
    except ValueError:
        return
    for entry in tokens:
        for amounts_ in entry.wallets.values():
            assert 0 <= amounts_.balance <= UINT256_MAX
            assert 0 <= amounts_.allowance <= UINT256_MAX


# -- the wallets asked about (issue 7: one string per wallet, not one per token) ---------------


def fresh(text: str) -> str:
    """An equal string that is a new object (as a config loader's would be)."""
    return "".join(list(text))


@pytest.mark.parametrize("key_case", [str, str.lower, str.upper])
def test_asked_wallets_come_back_as_the_callers_own_strings(key_case: Any) -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    for token in doc:
        token["wallets"] = {("0x" + key_case(w[2:])): v for w, v in token["wallets"].items()}
    asked = [fresh(W1.lower()), fresh(W2.lower())]
    tokens = parse.parse_aggregated(doc, chain_id=1, wallets=asked)
    for entry in tokens:
        assert len(entry.wallets) == 2
        assert all(any(key is w for w in asked) for key in entry.wallets)
    assert tokens[0].wallets[W1.lower()].balance == 18920076738417670657


def test_unasked_and_checksum_cased_asked_wallets_are_lowercased() -> None:
    tokens = parse.parse_aggregated(SDK_FIXTURE, chain_id=1, wallets=[W1])
    assert set(tokens[1].wallets) == {W1.lower(), W2.lower()}


@pytest.mark.parametrize("first", [W1, W1.lower()])
def test_one_wallet_in_two_letter_cases_is_refused_when_it_was_asked_for(first: str) -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    entry = {"balance": "1", "allowance": "1"}
    doc[1]["wallets"] = {first: entry, (W1.lower() if first == W1 else W1): entry}
    with pytest.raises(ValueError, match=r"\[1\]\.wallets: .* appears twice"):
        parse.parse_aggregated(doc, chain_id=1, wallets=[W1.lower(), W2.lower()])


def test_a_malformed_wallet_key_is_refused_even_if_it_was_asked_for() -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    doc[1]["wallets"]["0xnope"] = {"balance": "1", "allowance": "1"}
    with pytest.raises(ValueError, match=r"\[1\]\.wallets key: not an address"):
        parse.parse_aggregated(doc, chain_id=1, wallets=[W1.lower(), "0xnope"])


@pytest.mark.parametrize(
    "text",
    [MAX, str(UINT256_MAX + 1), "9" * 78, "0" * 78, "0" * 79, "9" * 77, "007", "0", "",
     "\u0663", "\u00b2", "1_000", "+1", " 1", "1 ", "\uff11"],
)  # fmt: skip
def test_amounts_parse_exactly_as_parse_amount_says(text: str) -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    doc[1]["wallets"][W1]["balance"] = text
    doc[1]["wallets"][W2]["allowance"] = text
    try:
        expected = parse_amount(text)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(f"{W1.lower()}].balance: {exc}")):
            parse.parse_aggregated(doc, chain_id=1, wallets=[W1.lower()])
        doc[1]["wallets"][W1]["balance"] = "1"
        with pytest.raises(ValueError, match=re.escape(f"{W2.lower()}].allowance: {exc}")):
            parse.parse_aggregated(doc, chain_id=1, wallets=[W1.lower()])
        return
    bend = parse.parse_aggregated(doc, chain_id=1, wallets=[W1.lower()])[1]
    assert bend.wallets[W1.lower()].balance == expected
    assert bend.wallets[W2.lower()].allowance == expected


@given(amounts | st.text(max_size=80) | st.from_regex(r"[0-9]{76,79}", fullmatch=True))
def test_any_amount_text_parses_as_parse_amount_says(text: str) -> None:
    doc = copy.deepcopy(SDK_FIXTURE)
    doc[0]["wallets"][W2]["allowance"] = text
    try:
        expected = parse_amount(text)
    except ValueError:
        with pytest.raises(ValueError, match="allowance"):
            parse.parse_aggregated(doc, chain_id=1)
        return
    parsed = parse.parse_aggregated(doc, chain_id=1)
    assert parsed[0].wallets[W2.lower()].allowance == expected


@given(st.lists(token_objects, max_size=4), st.data())
def test_naming_the_wallets_asked_for_changes_no_outcome(
    data: list[dict[str, Any]], draw: st.DataObject
) -> None:
    keys = sorted({k for t in data if isinstance(t["wallets"], dict) for k in t["wallets"]})
    asked = draw.draw(st.lists(st.sampled_from(keys), unique=True)) if keys else []
    asked += draw.draw(st.lists(addresses | st.text(max_size=44), max_size=2))

    def outcome(**kwargs: Any) -> object:
        try:
            return parse.parse_aggregated(data, chain_id=1, **kwargs)
        except ValueError as exc:
            return str(exc)

    expected = outcome()
    assert outcome(wallets=asked) == expected
    assert outcome(wallets=[a.lower() for a in asked]) == expected


# -- the bulk conversion of a wallets map and the entry-by-entry one agree ---------------------

amount_texts = (
    amounts
    | st.sampled_from(
        ["", "0", "007", MAX, str(UINT256_MAX + 1), "9" * 79, "1_0", "+1", " 1", "1\ud800"]
    )
    | st.text(alphabet="0123456789\u0663 _+-x", max_size=80)
)
wallet_maps = st.dictionaries(
    st.sampled_from([W1, W1.lower(), W2.lower(), W2, "0xnope"]) | addresses,
    st.fixed_dictionaries({"balance": amount_texts, "allowance": amount_texts})
    | st.fixed_dictionaries({"balance": amount_texts})
    | json_values,
    max_size=5,
)


def entry(balance: str, allowance: str = "1") -> dict[str, str]:
    return {"balance": balance, "allowance": allowance}


@given(wallet_maps, st.booleans(), st.lists(st.sampled_from([W1, W1.lower(), W2, W2.lower()])))
@example({W1: entry("1\ud800")}, True, [])
@example({W1: entry("")}, True, [])
@example({W1: entry("1", "9" * 79)}, True, [])
@example({W1: entry("1", "1" * 5000)}, True, [])  # past int()'s 4,300-digit limit
@example({W1: entry(str(UINT256_MAX + 1))}, True, [])
@example({W1: entry("1_0")}, True, [])
@example({W1: entry("1"), W1.lower(): entry("2")}, True, [])
def test_bulk_and_entry_by_entry_wallet_maps_agree(
    raw: dict[str, Any], all_learnt: bool, learnt: list[str]
) -> None:
    # The spellings already learnt: every key of the map (then the bulk path runs) or some.
    if all_learnt:
        learnt = [k for k in raw if re.fullmatch(r"0x[0-9a-fA-F]{40}", k)]

    def outcome(convert: Any) -> object:
        canonical = {key: key.lower() for key in learnt}
        try:
            result: object = convert(raw, canonical, "[3]")
        except ValueError as exc:
            result = str(exc)
        return result, canonical

    assert outcome(parse._wallet_amounts) == outcome(parse._checked_wallet_amounts)
