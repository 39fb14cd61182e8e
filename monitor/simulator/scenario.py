"""Scenario files: load and validate them strictly into a frozen ``Scenario``.

Every problem raises ``ConfigError`` naming its YAML path
(``chains[0].tokens[2].decimals: must be an integer 0..255``); unknown keys are errors. The key
reference is docs/simulator.md.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from monitor.errors import ConfigError
from monitor.simulator import fields
from monitor.simulator.faults import Fault, parse_fault
from monitor.simulator.generator import generate_world
from monitor.simulator.model import (
    DEFAULT_RATE_LIMIT_TOLERANCE_S,
    ERROR_BODY_SHAPES,
    FILTER_EMPTY_MODES,
    REPEATED_WALLETS_MODES,
    WALLET_KEY_CASES,
    Behaviour,
    GenerateSpec,
    Scenario,
    Web3Spec,
)
from monitor.simulator.world import (
    World,
    no_duplicates,
    parse_chain_id,
    parse_chains,
    parse_wallets,
)

__all__ = ["Scenario", "load_scenario", "parse_scenario"]

_TOP_KEYS = (
    "description",
    "chains",
    "wallets",
    "spenders",
    "balances",
    "allowances",
    "timeline",
    "faults",
    "behaviour",
    "api_key",
    "requests_per_second",
    "rate_limit_tolerance_s",
    "retry_after_s",
    "generate",
    "web3",
)
_WORLD_KEYS = ("chains", "wallets", "spenders", "balances", "allowances", "timeline")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_scenario(path: str | os.PathLike[str] | None) -> Scenario:
    """Read and validate the scenario file at ``path``; ``None`` loads the built-in default."""
    if path is None:
        ref = resources.files("monitor.simulator").joinpath("default_scenario.yaml")
        text = ref.read_text(encoding="utf-8")
        source = "default_scenario.yaml"
    else:
        source = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, f"cannot read scenario file: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(source, f"not valid YAML: {exc}") from None
    return parse_scenario(data, source=source)


def parse_scenario(data: object, *, source: str = "<scenario>") -> Scenario:
    """Validate a loaded YAML document into a ``Scenario``.

    Raises ``ConfigError(path, problem)`` for the first problem found, ``path`` being the YAML
    path (``source`` for problems with the document as a whole).
    """
    if data is None:
        raise ConfigError(source, "the scenario is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(source, "the scenario must be a mapping of the keys in docs/simulator.md")
    root = fields.mapping(data, "", allowed=_TOP_KEYS)
    description = root.get("description")
    if description is not None:
        description = fields.string(description, "description")
    common = _parse_common(root)
    if "generate" in root:
        present = [key for key in _WORLD_KEYS if key in root]
        if present:
            raise ConfigError(present[0], "cannot be combined with generate")
        spec = _parse_generate(root["generate"], "generate")
        chains, wallets, spenders = generate_world(spec)
        return Scenario(
            chains=chains,
            wallets=wallets,
            spenders=spenders,
            generate=spec,
            description=description,
            source=source,
            faults=common.faults,
            behaviour=common.behaviour,
            api_key=common.api_key,
            requests_per_second=common.requests_per_second,
            rate_limit_tolerance_s=common.rate_limit_tolerance_s,
            retry_after_s=common.retry_after_s,
            web3=common.web3,
        )
    for key in ("chains", "wallets"):
        if key not in root:
            raise ConfigError(key, "is required (or use generate)")
    chains = parse_chains(root["chains"], "chains")
    wallets = parse_wallets(root["wallets"], "wallets")
    world = World(chains, wallets)
    spenders = world.spenders(root.get("spenders", []), "spenders")
    balances = tuple(
        world.balance(item, fields.item_path("balances", i))
        for i, item in enumerate(_list(root, "balances"))
    )
    no_duplicates(balances, "balances", lambda b: (b.chain_id, b.wallet, b.token))
    allowances = tuple(
        world.allowance(item, fields.item_path("allowances", i))
        for i, item in enumerate(_list(root, "allowances"))
    )
    no_duplicates(allowances, "allowances", lambda a: (a.chain_id, a.wallet, a.token, a.spender))
    timeline = tuple(
        world.event(item, fields.item_path("timeline", i))
        for i, item in enumerate(_list(root, "timeline"))
    )
    return Scenario(
        chains=chains,
        wallets=wallets,
        spenders=spenders,
        balances=balances,
        allowances=allowances,
        timeline=timeline,
        description=description,
        source=source,
        faults=common.faults,
        behaviour=common.behaviour,
        api_key=common.api_key,
        requests_per_second=common.requests_per_second,
        rate_limit_tolerance_s=common.rate_limit_tolerance_s,
        retry_after_s=common.retry_after_s,
        web3=common.web3,
    )


def _list(root: Mapping[str, object], key: str) -> list[object]:
    value = root.get(key)
    return [] if value is None else fields.sequence(value, key)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Common:
    """The keys shared by explicit and generated scenarios."""

    faults: tuple[Fault, ...]
    behaviour: Behaviour
    api_key: str | None
    requests_per_second: int | None
    rate_limit_tolerance_s: float
    retry_after_s: int | None
    web3: Web3Spec


def _parse_common(root: Mapping[str, object]) -> _Common:
    api_key = root.get("api_key")
    if api_key is not None and (
        not isinstance(api_key, str) or not api_key or any(c.isspace() for c in api_key)
    ):
        # Never echo the value: it is a secret even when malformed.
        raise ConfigError("api_key", "must be a non-empty string without whitespace")
    rps = root.get("requests_per_second")
    tolerance = root.get("rate_limit_tolerance_s")
    retry_after = root.get("retry_after_s")
    return _Common(
        faults=tuple(
            parse_fault(item, fields.item_path("faults", i))
            for i, item in enumerate(_list(root, "faults"))
        ),
        behaviour=_parse_behaviour(root.get("behaviour"), "behaviour"),
        api_key=api_key,
        requests_per_second=(
            None if rps is None else fields.integer(rps, "requests_per_second", minimum=1)
        ),
        rate_limit_tolerance_s=(
            DEFAULT_RATE_LIMIT_TOLERANCE_S
            if tolerance is None
            else fields.number(tolerance, "rate_limit_tolerance_s", minimum=0.0, maximum=0.5)
        ),
        retry_after_s=(
            None if retry_after is None else fields.integer(retry_after, "retry_after_s", minimum=0)
        ),
        web3=_parse_web3(root.get("web3"), "web3"),
    )


_WEB3_KEYS = (
    "first_block",
    "history_blocks",
    "blocks_per_step",
    "block_time_s",
    "max_block_range",
    "max_logs",
    "multicall",
    "batches",
    "no_code",
)


def _parse_web3(data: object, path: str) -> Web3Spec:
    if data is None:
        return Web3Spec()
    section = fields.mapping(data, path, allowed=_WEB3_KEYS)
    defaults = Web3Spec()
    at = functools.partial(fields.key_path, path)

    def integer(key: str, default: int, minimum: int) -> int:
        return fields.integer(section.get(key, default), at(key), minimum=minimum)

    def optional(key: str) -> int | None:
        value = section.get(key)
        return None if value is None else fields.integer(value, at(key), minimum=1)

    no_code = section.get("no_code")
    return Web3Spec(
        first_block=fields.integer(
            section.get("first_block", defaults.first_block),
            at("first_block"),
            minimum=0,
            maximum=2**48,
        ),
        history_blocks=fields.integer(
            section.get("history_blocks", defaults.history_blocks),
            at("history_blocks"),
            minimum=100,
            maximum=100_000_000,
        ),
        blocks_per_step=integer("blocks_per_step", defaults.blocks_per_step, 1),
        block_time_s=integer("block_time_s", defaults.block_time_s, 1),
        max_block_range=optional("max_block_range"),
        max_logs=optional("max_logs"),
        multicall=fields.boolean(section.get("multicall", defaults.multicall), at("multicall")),
        batches=fields.boolean(section.get("batches", defaults.batches), at("batches")),
        no_code=()
        if no_code is None
        else tuple(
            fields.address(item, fields.item_path(at("no_code"), i))
            for i, item in enumerate(fields.sequence(no_code, at("no_code")))
        ),
    )


def _parse_behaviour(data: object, path: str) -> Behaviour:
    if data is None:
        return Behaviour()
    section = fields.mapping(
        data,
        path,
        allowed=(
            "filter_empty",
            "wallet_key_case",
            "repeated_wallets",
            "max_wallets_per_request",
            "native_in_custom",
            "error_body",
        ),
    )
    defaults = Behaviour()
    at = functools.partial(fields.key_path, path)
    max_wallets = section.get("max_wallets_per_request")
    return Behaviour(
        filter_empty=fields.choice(
            section.get("filter_empty", defaults.filter_empty),
            at("filter_empty"),
            FILTER_EMPTY_MODES,
        ),
        wallet_key_case=fields.choice(
            section.get("wallet_key_case", defaults.wallet_key_case),
            at("wallet_key_case"),
            WALLET_KEY_CASES,
        ),
        repeated_wallets=fields.choice(
            section.get("repeated_wallets", defaults.repeated_wallets),
            at("repeated_wallets"),
            REPEATED_WALLETS_MODES,
        ),
        max_wallets_per_request=(
            None
            if max_wallets is None
            else fields.integer(max_wallets, at("max_wallets_per_request"), minimum=1)
        ),
        native_in_custom=fields.boolean(
            section.get("native_in_custom", defaults.native_in_custom), at("native_in_custom")
        ),
        error_body=fields.choice(
            section.get("error_body", defaults.error_body), at("error_body"), ERROR_BODY_SHAPES
        ),
    )


def _parse_generate(data: object, path: str) -> GenerateSpec:
    section = fields.mapping(
        data,
        path,
        allowed=(
            "seed",
            "chains",
            "wallets",
            "tokens",
            "spenders",
            "nonzero_fraction",
            "unlimited_fraction",
            "churn_fraction",
        ),
        required=("seed", "chains", "wallets", "tokens", "spenders"),
    )
    at = functools.partial(fields.key_path, path)
    chain_ids = tuple(
        parse_chain_id(item, fields.item_path(at("chains"), i))
        for i, item in enumerate(fields.sequence(section["chains"], at("chains")))
    )
    if not chain_ids:
        raise ConfigError(at("chains"), "must list at least one chain")
    if len(set(chain_ids)) != len(chain_ids):
        raise ConfigError(at("chains"), "lists a chain twice")

    def fraction(key: str, default: float) -> float:
        return fields.number(section.get(key, default), at(key), minimum=0.0, maximum=1.0)

    return GenerateSpec(
        seed=fields.integer(section["seed"], at("seed"), minimum=0),
        chains=chain_ids,
        wallets=fields.integer(section["wallets"], at("wallets"), minimum=1, maximum=1_000_000),
        tokens=fields.integer(section["tokens"], at("tokens"), minimum=0, maximum=10_000),
        spenders=fields.integer(section["spenders"], at("spenders"), minimum=1, maximum=1_000),
        nonzero_fraction=fraction("nonzero_fraction", 1.0),
        unlimited_fraction=fraction("unlimited_fraction", 0.2),
        churn_fraction=fraction("churn_fraction", 0.0),
    )
