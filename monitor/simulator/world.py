"""The explicit world of a scenario file: chains and tokens, wallets, and the entries that
refer to them (spenders, balances, allowances, timeline events), checked against each other."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.chains import SUPPORTED_CHAINS
from monitor.errors import ConfigError
from monitor.simulator import fields
from monitor.simulator.model import (
    NATIVE_COINS,
    AllowanceEntry,
    BalanceEntry,
    ChainSpec,
    SpenderSpec,
    TimelineEvent,
    TokenSpec,
    WalletSpec,
    native_coin,
)

_E = TypeVar("_E")
_TOKEN_KEYS = ("address", "symbol", "name", "decimals", "usd_price", "tags", "native", "custom")


def parse_chain_id(data: object, path: str) -> int:
    if isinstance(data, bool) or not isinstance(data, int) or data not in SUPPORTED_CHAINS:
        known = ", ".join(str(c) for c in SUPPORTED_CHAINS)
        raise ConfigError(path, f"must be a supported chain id ({known}), got {data!r:.60}")
    return data


def parse_chains(data: object, path: str) -> tuple[ChainSpec, ...]:
    items = fields.sequence(data, path)
    if not items:
        raise ConfigError(path, "must list at least one chain")
    chains: list[ChainSpec] = []
    for i, item in enumerate(items):
        at = fields.item_path(path, i)
        section = fields.mapping(item, at, allowed=("id", "tokens"), required=("id",))
        chain_id = parse_chain_id(section["id"], fields.key_path(at, "id"))
        if any(c.id == chain_id for c in chains):
            raise ConfigError(fields.key_path(at, "id"), f"chain {chain_id} is listed twice")
        tokens_path = fields.key_path(at, "tokens")
        raw_tokens = section.get("tokens")
        token_items = [] if raw_tokens is None else fields.sequence(raw_tokens, tokens_path)
        tokens: list[TokenSpec] = []
        for j, token_item in enumerate(token_items):
            token = _parse_token(token_item, fields.item_path(tokens_path, j), chain_id)
            if any(t.address == token.address for t in tokens):
                raise ConfigError(
                    fields.key_path(fields.item_path(tokens_path, j), "address"),
                    f"token {token.address} is listed twice on chain {chain_id}",
                )
            tokens.append(token)
        natives = [t for t in tokens if t.native]
        others = [t for t in tokens if not t.native]
        chains.append(
            ChainSpec(
                id=chain_id, tokens=(natives[0] if natives else native_coin(chain_id), *others)
            )
        )
    return tuple(chains)


def _parse_token(data: object, path: str, chain_id: int) -> TokenSpec:
    section = fields.mapping(data, path, allowed=_TOKEN_KEYS)
    at = functools.partial(fields.key_path, path)
    native = fields.boolean(section.get("native", False), at("native"))
    if "address" in section:
        address = fields.address(section["address"], at("address"))
    elif native:
        address = NATIVE_TOKEN
    else:
        raise ConfigError(at("address"), "is required")
    if address == NATIVE_TOKEN:
        if "native" in section and not native:
            raise ConfigError(at("native"), f"{NATIVE_TOKEN} is the native pseudo-token")
        native = True
    elif native:
        raise ConfigError(at("address"), f"the native pseudo-token's address is {NATIVE_TOKEN}")
    custom = fields.boolean(section.get("custom", False), at("custom"))
    if native and custom:
        raise ConfigError(at("custom"), "the native token cannot be a custom token")
    default_symbol, default_name = NATIVE_COINS[chain_id] if native else ("", "")
    if "symbol" in section:
        symbol = fields.string(section["symbol"], at("symbol"))
    elif native:
        symbol = default_symbol
    else:
        raise ConfigError(at("symbol"), "is required")
    name = (
        fields.string(section["name"], at("name")) if "name" in section else default_name or symbol
    )
    if "decimals" in section:
        decimals = fields.integer(section["decimals"], at("decimals"), minimum=0, maximum=255)
    elif native:
        decimals = 18
    else:
        raise ConfigError(at("decimals"), "is required")
    price = section.get("usd_price")
    tags: tuple[str, ...]
    if "tags" in section:
        tags = tuple(
            fields.string(tag, fields.item_path(at("tags"), k))
            for k, tag in enumerate(fields.sequence(section["tags"], at("tags")))
        )
    else:
        tags = ("native", f"PEG:{symbol}") if native else ("tokens",)
    if native and "native" not in tags:
        tags = ("native", *tags)
    return TokenSpec(
        chain_id=chain_id,
        address=address,
        symbol=symbol,
        name=name,
        decimals=decimals,
        usd_price=None if price is None else fields.usd_price(price, at("usd_price")),
        tags=tags,
        native=native,
        custom=custom,
    )


def parse_wallets(data: object, path: str) -> tuple[WalletSpec, ...]:
    items = fields.sequence(data, path)
    if not items:
        raise ConfigError(path, "must list at least one wallet")
    wallets: list[WalletSpec] = []
    for i, item in enumerate(items):
        at = fields.item_path(path, i)
        section = fields.mapping(item, at, allowed=("address", "label"), required=("address",))
        address = fields.address(section["address"], fields.key_path(at, "address"))
        if any(w.address == address for w in wallets):
            raise ConfigError(fields.key_path(at, "address"), f"wallet {address} is listed twice")
        label = section.get("label")
        wallets.append(
            WalletSpec(
                address=address,
                label=None if label is None else fields.string(label, fields.key_path(at, "label")),
            )
        )
    return tuple(wallets)


def no_duplicates(
    entries: tuple[_E, ...], path: str, key: Callable[[_E], tuple[object, ...]]
) -> None:
    seen: set[tuple[object, ...]] = set()
    for i, entry in enumerate(entries):
        value = key(entry)
        if value in seen:
            raise ConfigError(
                fields.item_path(path, i), "sets the same position as an earlier entry"
            )
        seen.add(value)


class World:
    """Cross-reference checks against the chains and wallets already parsed."""

    def __init__(self, chains: tuple[ChainSpec, ...], wallets: tuple[WalletSpec, ...]) -> None:
        self._tokens = {c.id: {t.address: t for t in c.tokens} for c in chains}
        self._wallets = {w.address for w in wallets}

    def chain(self, data: object, path: str) -> int:
        chain_id = parse_chain_id(data, path)
        if chain_id not in self._tokens:
            raise ConfigError(path, f"chain {chain_id} is not in chains")
        return chain_id

    def wallet(self, data: object, path: str) -> str:
        address = fields.address(data, path)
        if address not in self._wallets:
            raise ConfigError(path, f"wallet {address} is not in wallets")
        return address

    def token(self, data: object, path: str, chain_id: int) -> TokenSpec:
        address = fields.address(data, path)
        token = self._tokens[chain_id].get(address)
        if token is None:
            raise ConfigError(path, f"token {address} is not a token of chain {chain_id}")
        return token

    def spenders(self, data: object, path: str) -> tuple[SpenderSpec, ...]:
        spenders: list[SpenderSpec] = []
        for i, item in enumerate(fields.sequence(data, path)):
            at = fields.item_path(path, i)
            section = fields.mapping(
                item,
                at,
                allowed=("chain", "address", "label", "trusted"),
                required=("chain", "address"),
            )
            chain_id = self.chain(section["chain"], fields.key_path(at, "chain"))
            address = fields.address(section["address"], fields.key_path(at, "address"))
            if any(s.chain_id == chain_id and s.address == address for s in spenders):
                raise ConfigError(
                    fields.key_path(at, "address"), f"spender {address} is listed twice"
                )
            label = section.get("label")
            spenders.append(
                SpenderSpec(
                    chain_id=chain_id,
                    address=address,
                    label=None
                    if label is None
                    else fields.string(label, fields.key_path(at, "label")),
                    trusted=fields.boolean(
                        section.get("trusted", False), fields.key_path(at, "trusted")
                    ),
                )
            )
        return tuple(spenders)

    def balance(self, data: object, path: str) -> BalanceEntry:
        section = fields.mapping(
            data,
            path,
            allowed=("chain", "wallet", "token", "amount"),
            required=("chain", "wallet", "token", "amount"),
        )
        at = functools.partial(fields.key_path, path)
        chain_id = self.chain(section["chain"], at("chain"))
        return BalanceEntry(
            chain_id=chain_id,
            wallet=self.wallet(section["wallet"], at("wallet")),
            token=self.token(section["token"], at("token"), chain_id).address,
            amount=fields.amount(section["amount"], at("amount")),
        )

    def allowance(self, data: object, path: str) -> AllowanceEntry:
        section = fields.mapping(
            data,
            path,
            allowed=("chain", "wallet", "token", "spender", "amount", "approved"),
            required=("chain", "wallet", "token", "spender", "amount"),
        )
        at = functools.partial(fields.key_path, path)
        chain_id = self.chain(section["chain"], at("chain"))
        token = self.token(section["token"], at("token"), chain_id)
        if token.native:
            raise ConfigError(
                at("token"), "the native coin needs no approval (1inch always reports 2^256-1)"
            )
        amount = fields.amount(section["amount"], at("amount"))
        approved = None
        if "approved" in section:
            approved = fields.amount(section["approved"], at("approved"))
            if approved < amount:
                raise ConfigError(
                    at("approved"),
                    "must be at least amount (what is left of an approval cannot exceed it)",
                )
        return AllowanceEntry(
            chain_id=chain_id,
            wallet=self.wallet(section["wallet"], at("wallet")),
            token=token.address,
            spender=fields.address(section["spender"], at("spender")),
            amount=amount,
            approved=approved,
        )

    def event(self, data: object, path: str) -> TimelineEvent:
        section = fields.mapping(
            data, path, allowed=("at_poll", "at_s", "set_balance", "set_allowance")
        )
        at = functools.partial(fields.key_path, path)
        if ("at_poll" in section) == ("at_s" in section):
            raise ConfigError(path, "needs exactly one of at_poll, at_s")
        if "set_balance" not in section and "set_allowance" not in section:
            raise ConfigError(path, "needs set_balance or set_allowance")
        return TimelineEvent(
            at_poll=(
                fields.integer(section["at_poll"], at("at_poll"), minimum=1)
                if "at_poll" in section
                else None
            ),
            at_s=(
                fields.number(section["at_s"], at("at_s"), minimum=0.0)
                if "at_s" in section
                else None
            ),
            set_balance=(
                self.balance(section["set_balance"], at("set_balance"))
                if "set_balance" in section
                else None
            ),
            set_allowance=(
                self.allowance(section["set_allowance"], at("set_allowance"))
                if "set_allowance" in section
                else None
            ),
        )
