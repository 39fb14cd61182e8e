"""Pure parsers from 1inch JSON to typed values. Every problem is a ``ValueError`` naming it.

``parse_body`` decodes a response body and hands it to one of them.

Tolerant where 1inch itself is inconsistent (missing ``tags``/``tracked``, ``wallets: null``,
checksum-cased wallet keys, extra fields, null symbol or name); strict where a mistake would
hide risk (amounts, addresses, duplicate keys).
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple, TypeVar

import orjson

from monitor.domain.addresses import is_address
from monitor.domain.model import UINT256_MAX, Token, parse_amount

T = TypeVar("T")

_UINT256_MAX_TEXT = str(UINT256_MAX)  # 78 digits


class NotJson(ValueError):
    """A body that ``json.loads`` cannot decode (nesting too deep for it included)."""

    def __init__(self, size_bytes: int) -> None:
        super().__init__(f"body is not JSON ({size_bytes} bytes)")
        self.size_bytes = size_bytes


def parse_body(payload: bytes, parser: Callable[[object], T]) -> T:
    """``parser(json.loads(payload))`` exactly, decoded by orjson where that cannot differ.

    ``parser`` is one of this module's parsers. orjson decodes a large answer in 40-60% of
    the time ``json`` takes. The two disagree only where orjson refuses what ``json`` accepts
    (NaN and Infinity, a byte-order mark, UTF-16 and UTF-32, lone surrogates, nesting past
    1,024 levels) and on integers outside [-2^63, 2^64), which orjson makes floats. No parser
    here accepts such a float (amounts are strings, decimals 0..255, prices strings or exact
    integers), so what orjson decodes and the parser accepts is what ``json`` would give;
    anything else is decoded again by ``json`` and judged from that, so that the verdict and
    its message are the ones ``json.loads`` leads to.

    Raises ``NotJson`` when ``json`` cannot decode the body, and the parser's ``ValueError``
    when it refuses the document.
    """
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    else:
        try:
            return parser(data)
        except ValueError:
            pass
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise NotJson(len(payload)) from None
    return parser(data)


class BalanceAllowance(NamedTuple):
    """One wallet's balance and allowance of a token, in base units.

    A named tuple, not a frozen dataclass: a poll builds one per (wallet, token) of every
    answer (306,000 in the large benchmark), and a frozen dataclass's ``__init__`` cost more
    than validating and converting both amounts.
    """

    balance: int
    allowance: int


_new_pair = functools.partial(tuple.__new__, BalanceAllowance)
_balance_of = operator.itemgetter("balance")
_allowance_of = operator.itemgetter("allowance")


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregatedToken:
    """One token of an ``aggregatedBalancesAndAllowances`` answer; wallets are lowercase.

    ``wallets_known`` is False when 1inch sent ``wallets: null`` (its own example does): the
    answer then says nothing about any wallet's holding of this token, which is not the same
    as every wallet holding nothing.
    """

    token: Token
    wallets: Mapping[str, BalanceAllowance]
    wallets_known: bool = True
    is_custom: bool = False
    tracked: bool | None = None


def _address(value: object, where: str) -> str:
    if not is_address(value):
        raise ValueError(f"{where}: not an address: {value!r:.60}")
    assert isinstance(value, str)
    return value.lower()


def _amount(value: object, where: str) -> int:
    try:
        return parse_amount(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _optional_text(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _decimals(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{where}: not a whole number: {value!r}")
    decimals = int(value)
    if not 0 <= decimals <= 255:
        raise ValueError(f"{where}: out of range 0..255: {decimals}")
    return decimals


def _tags(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"{where}: expected a list of strings")
    return tuple(value)


def _lower_keys(mapping: Mapping[str, object], where: str) -> dict[str, object]:
    """Canonicalise address keys, refusing two spellings of one address."""
    out: dict[str, object] = {}
    for key, value in mapping.items():
        address = _address(key, f"{where} key")
        if address in out:
            raise ValueError(f"{where}: {address} appears twice (in different letter case)")
        out[address] = value
    return out


def parse_aggregated(
    data: object, *, chain_id: int, wallets: Iterable[str] = ()
) -> tuple[AggregatedToken, ...]:
    """Parse endpoint 1, ``GET aggregatedBalancesAndAllowances/{spender}``.

    ``wallets`` are the addresses asked about. An answer's wallet key that spells one of them,
    in any letter case, comes back as that very string when it is lowercase (as the config's
    are), so that a poll's positions share the config's strings instead of holding a fresh
    copy per token. Every other key is validated and lowercased as usual.
    """
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON array of tokens, got {type(data).__name__}")
    # Spelling as sent -> canonical lowercase string, learnt once per answer (1inch repeats
    # every wallet key for every token); it only ever holds validated addresses.
    canonical: dict[str, str] = {}
    for wallet in wallets:
        if is_address(wallet):
            lower = wallet.lower()
            canonical[lower] = wallet if wallet == lower else lower
    tokens: list[AggregatedToken] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        where = f"[{i}]"
        obj = _object(item, where)
        address = _address(obj.get("address"), f"{where}.address")
        if address in seen:
            raise ValueError(f"{where}.address: token {address} listed twice")
        seen.add(address)
        token = Token(
            chain_id=chain_id,
            address=address,
            symbol=_optional_text(obj.get("symbol"), f"{where}.symbol"),
            name=_optional_text(obj.get("name"), f"{where}.name"),
            decimals=_decimals(obj.get("decimals"), f"{where}.decimals"),
            tags=_tags(obj.get("tags"), f"{where}.tags"),
        )
        raw_wallets = obj.get("wallets")
        amounts: dict[str, BalanceAllowance] = {}
        if raw_wallets is not None:
            raw = _object(raw_wallets, f"{where}.wallets")
            amounts = _wallet_amounts(raw, canonical, where)
        is_custom = obj.get("isCustom")
        tracked = obj.get("tracked")
        tokens.append(
            AggregatedToken(
                token=token,
                wallets=amounts,
                wallets_known=raw_wallets is not None,
                is_custom=is_custom if isinstance(is_custom, bool) else False,
                tracked=tracked if isinstance(tracked, bool) else None,
            )
        )
    return tuple(tokens)


def _wallet_amounts(
    raw: Mapping[str, object], canonical: dict[str, str], where: str
) -> dict[str, BalanceAllowance]:
    """One token's ``wallets`` map: the hot loop of a poll, once per wallet and token.

    A map whose keys are all known spellings and whose amounts are all plainly fine (strings
    of 1 to 78 ASCII digits, up to 2^256-1) is converted in bulk, each check one C-level pass
    over the whole map. Anything else, including the first map of an answer (its spellings
    are not learnt yet), goes to ``_checked_wallet_amounts``, which judges every entry in
    order: the result, or the first error and its message, is always that function's.
    """
    try:
        wallets = list(map(canonical.__getitem__, raw))
        entries: list[Any] = list(raw.values())  # not all dicts: then a TypeError
        texts: list[str] = list(map(_balance_of, entries))
        texts += map(_allowance_of, entries)
        joined = "".join(texts)  # a TypeError when one is not a string
    except (KeyError, TypeError):
        return _checked_wallet_amounts(raw, canonical, where)
    if (
        not joined.isascii()
        or joined.encode().translate(None, b"0123456789")
        or "" in texts
        or (texts and max(map(len, texts)) > 78)
    ):
        return _checked_wallet_amounts(raw, canonical, where)
    units = list(map(int, texts))
    if units and max(units) > UINT256_MAX:
        return _checked_wallet_amounts(raw, canonical, where)
    count = len(entries)
    pairs = map(_new_pair, zip(units[:count], units[count:], strict=True))
    out = dict(zip(wallets, pairs, strict=True))
    if len(out) < count:  # one wallet in two letter cases
        return _checked_wallet_amounts(raw, canonical, where)
    return out


def _checked_wallet_amounts(
    raw: Mapping[str, object], canonical: dict[str, str], where: str
) -> dict[str, BalanceAllowance]:
    """``_wallet_amounts`` entry by entry, learning new spellings of the wallet keys.

    Error texts are built only on error. Amounts that are plainly fine (ASCII decimal digits
    up to 2^256-1, compared as text: equally long digit strings order as their numbers do)
    skip ``parse_amount``, which judges all the others.
    """
    out: dict[str, BalanceAllowance] = {}
    for key, entry in raw.items():
        wallet = canonical.get(key)
        if wallet is None:
            lower = _address(key, f"{where}.wallets key")
            wallet = canonical.setdefault(lower, lower)
            canonical[key] = wallet
        if wallet in out:
            raise ValueError(f"{where}.wallets: {wallet} appears twice (in different letter case)")
        values = entry if type(entry) is dict else _object(entry, f"{where}.wallets[{wallet}]")
        balance = values.get("balance")
        if (
            type(balance) is str
            and balance.isdigit()
            and balance.isascii()
            and (len(balance) < 78 or (len(balance) == 78 and balance <= _UINT256_MAX_TEXT))
        ):
            balance_units = int(balance)
        else:
            balance_units = _amount(balance, f"{where}.wallets[{wallet}].balance")
        allowance = values.get("allowance")
        if (
            type(allowance) is str
            and allowance.isdigit()
            and allowance.isascii()
            and (len(allowance) < 78 or (len(allowance) == 78 and allowance <= _UINT256_MAX_TEXT))
        ):
            allowance_units = int(allowance)
        else:
            allowance_units = _amount(allowance, f"{where}.wallets[{wallet}].allowance")
        out[wallet] = BalanceAllowance(balance_units, allowance_units)
    return out


def parse_amount_map(data: object) -> dict[str, int]:
    """Parse ``{token: "amount"}`` (endpoints 2, 3, 7 and 8)."""
    where = "answer"
    return {
        token: _amount(value, f"[{token}]")
        for token, value in _lower_keys(_object(data, where), where).items()
    }


def parse_wallet_amount_maps(data: object) -> dict[str, dict[str, int]]:
    """Parse ``{wallet: {token: "amount"}}`` (endpoint 4)."""
    where = "answer"
    out: dict[str, dict[str, int]] = {}
    for wallet, inner in _lower_keys(_object(data, where), where).items():
        at = f"[{wallet}]"
        out[wallet] = {
            token: _amount(value, f"{at}[{token}]")
            for token, value in _lower_keys(_object(inner, at), at).items()
        }
    return out


def parse_balance_allowance_map(data: object) -> dict[str, BalanceAllowance]:
    """Parse ``{token: {"balance": "...", "allowance": "..."}}`` (endpoints 5 and 6)."""
    where = "answer"
    out: dict[str, BalanceAllowance] = {}
    for token, entry in _lower_keys(_object(data, where), where).items():
        at = f"[{token}]"
        values = _object(entry, at)
        out[token] = BalanceAllowance(
            balance=_amount(values.get("balance"), f"{at}.balance"),
            allowance=_amount(values.get("allowance"), f"{at}.allowance"),
        )
    return out


def parse_prices(data: object) -> dict[str, Decimal]:
    """Parse ``{token: "price"}`` from the Spot Price API, exactly (no floats).

    Without a currency a price is native wei per whole token (an integer string); with
    ``currency`` it is a decimal string. Both parse exactly as ``Decimal``.
    """
    where = "answer"
    out: dict[str, Decimal] = {}
    for token, value in _lower_keys(_object(data, where), where).items():
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError(f"[{token}]: expected a decimal string, got {type(value).__name__}")
        try:
            price = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"[{token}]: not a decimal number: {value!r:.60}") from None
        if not price.is_finite() or price < 0:
            raise ValueError(f"[{token}]: not a usable price: {value!r:.60}")
        out[token] = price
    return out


def parse_currencies(data: object) -> tuple[str, ...]:
    """Parse ``{"codes": ["USD", ...]}``."""
    codes = _object(data, "answer").get("codes")
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise ValueError("codes: expected a list of currency codes")
    return tuple(codes)


def describe_error_body(data: object) -> str | None:
    """The human part of either 1inch error-body shape, or None when there is none."""
    if not isinstance(data, dict):
        return None
    for key in ("description", "message", "error"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None
