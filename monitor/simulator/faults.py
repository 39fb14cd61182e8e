"""Injected failures: what a fault is, which requests it hits, and the broken bodies it serves.

Faults are kept in a ``FaultBook`` in the order they were added. For each valid API request the
first matching fault is taken (its ``count`` goes down by one, and it is dropped at zero), so
sequences compose: a ``429 x2`` fault added before a ``500 x1`` fault answers the next two
matching requests with 429, the third with 500, and then the real answer returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from monitor.domain.addresses import is_address
from monitor.errors import ConfigError
from monitor.simulator import fields

ENDPOINTS: Final = (
    "aggregated",
    "balances",
    "custom_balances",
    "balances_multiple",
    "allowances_and_balances",
    "custom_allowances_and_balances",
    "allowances",
    "custom_allowances",
    "price",
    "web3",
    "any",
)
"""Endpoint names a fault can target (``any`` matches every 1inch route)."""

BODY_KINDS: Final = (
    "error",
    "html",
    "truncated",
    "not_json",
    "non_numeric_amount",
    "missing_fields",
    "extra_fields",
    "ok",
)
"""What a faulted response carries; see docs/simulator.md for each."""

_DEFAULT_STATUS: Final = {"error": 500, "html": 502}
_BODYLESS_STATUSES: Final = (204, 205, 304)
_FIELDS: Final = (
    "endpoint",
    "chain_id",
    "spender",
    "wallet",
    "status",
    "body",
    "retry_after_s",
    "delay_s",
    "count",
    "from_poll",
    "until_poll",
    "bad_amount",
)

HTML_PAGE: Final = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)
NOT_JSON_TEXT: Final = (
    "upstream connect error or disconnect/reset before headers. reset reason: overflow"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """A failure to inject into the requests it matches.

    Filters (all optional, ``None`` matches anything): ``endpoint``, ``chain_id``, ``spender``,
    ``wallet`` (the request includes that wallet) and the inclusive poll window
    ``from_poll``..``until_poll``. ``count`` limits the fault to the next N matching requests
    (``None``: until cleared). ``status`` defaults to 500 for ``error``, 502 for ``html`` and 200
    for the other body kinds. ``delay_s`` delays the answer (a hang when longer than the
    client's timeout). ``bad_amount`` is the text ``non_numeric_amount`` puts in place of an
    amount. Addresses are stored lowercase.
    """

    endpoint: str = "any"
    chain_id: int | None = None
    spender: str | None = None
    wallet: str | None = None
    status: int | None = None
    body: str = "error"
    retry_after_s: int | None = None
    delay_s: float = 0.0
    count: int | None = None
    from_poll: int | None = None
    until_poll: int | None = None
    bad_amount: str = "12.5"

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}")
        if self.body not in BODY_KINDS:
            raise ValueError(f"unknown body kind {self.body!r}")
        if self.status is not None and (
            not 200 <= self.status <= 599 or self.status in _BODYLESS_STATUSES
        ):
            raise ValueError(f"status {self.status} is not a status that can carry a body")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or None for unlimited)")
        if self.delay_s < 0:
            raise ValueError("delay_s must not be negative")
        for name in ("spender", "wallet"):
            value = getattr(self, name)
            if value is not None:
                if not is_address(value):
                    raise ValueError(f"{name} {value!r} is not an address")
                object.__setattr__(self, name, value.lower())

    @property
    def effective_status(self) -> int:
        """The status served: ``status``, or the body kind's default."""
        return self.status if self.status is not None else _DEFAULT_STATUS.get(self.body, 200)

    @property
    def keeps_answer_complete(self) -> bool:
        """True when the client still receives the whole, correct answer (poll counts advance)."""
        return self.body in ("ok", "extra_fields") and self.effective_status == 200

    def to_json(self) -> dict[str, object]:
        """The fault as the control endpoint and scenario files spell it."""
        return {name: getattr(self, name) for name in _FIELDS}


def parse_fault(data: object, path: str) -> Fault:
    """Validate one fault from a scenario file or the control endpoint."""
    section = fields.mapping(data, path, allowed=_FIELDS)

    def opt_int(key: str, minimum: int, maximum: int | None = None) -> int | None:
        value = section.get(key)
        if value is None:
            return None
        return fields.integer(value, fields.key_path(path, key), minimum=minimum, maximum=maximum)

    def opt_address(key: str) -> str | None:
        value = section.get(key)
        return None if value is None else fields.address(value, fields.key_path(path, key))

    delay = section.get("delay_s", 0.0)
    bad_amount = section.get("bad_amount", "12.5")
    if not isinstance(bad_amount, str):
        raise ConfigError(fields.key_path(path, "bad_amount"), "must be a string")
    status = section.get("status")
    if status in _BODYLESS_STATUSES:
        raise ConfigError(fields.key_path(path, "status"), f"{status} cannot carry a body")
    fault = Fault(
        endpoint=fields.choice(
            section.get("endpoint", "any"), fields.key_path(path, "endpoint"), ENDPOINTS
        ),
        chain_id=opt_int("chain_id", 1),
        spender=opt_address("spender"),
        wallet=opt_address("wallet"),
        status=opt_int("status", 200, 599),
        body=fields.choice(section.get("body", "error"), fields.key_path(path, "body"), BODY_KINDS),
        retry_after_s=opt_int("retry_after_s", 0),
        delay_s=fields.number(delay, fields.key_path(path, "delay_s"), minimum=0.0),
        count=opt_int("count", 1),
        from_poll=opt_int("from_poll", 1),
        until_poll=opt_int("until_poll", 1),
        bad_amount=bad_amount,
    )
    if (
        fault.from_poll is not None
        and fault.until_poll is not None
        and fault.until_poll < fault.from_poll
    ):
        raise ConfigError(fields.key_path(path, "until_poll"), "must not be below from_poll")
    return fault


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultTarget:
    """What a fault is matched against: one valid API request.

    ``polls`` maps each wallet of the request to the poll its answer reflects; requests without
    wallets (prices) use ``default_poll``.
    """

    endpoint: str
    chain_id: int
    spender: str | None = None
    polls: Mapping[str, int]
    default_poll: int = 1

    def poll_for(self, wallet: str | None) -> int:
        if wallet is not None:
            return self.polls[wallet]
        return max(self.polls.values(), default=self.default_poll)


class FaultBook:
    """The active faults, in the order they were added, with their remaining counts."""

    def __init__(self, faults: tuple[Fault, ...] = ()) -> None:
        self._entries: list[tuple[Fault, list[int | None]]] = []
        for fault in faults:
            self.add(fault)

    def add(self, fault: Fault) -> None:
        """Activate ``fault`` after the ones already active."""
        self._entries.append((fault, [fault.count]))

    def clear(self) -> int:
        """Remove every fault; return how many were active."""
        removed = len(self._entries)
        self._entries.clear()
        return removed

    def take(self, target: FaultTarget) -> Fault | None:
        """The first fault matching ``target``, consuming one of its uses."""
        for index, (fault, remaining) in enumerate(self._entries):
            if not _matches(fault, target):
                continue
            left = remaining[0]
            if left is not None:
                if left <= 1:
                    del self._entries[index]
                else:
                    remaining[0] = left - 1
            return fault
        return None

    def active(self) -> list[dict[str, object]]:
        """The active faults as JSON, each with ``remaining`` uses (null: unlimited)."""
        return [fault.to_json() | {"remaining": remaining[0]} for fault, remaining in self._entries]


def _matches(fault: Fault, target: FaultTarget) -> bool:
    if fault.endpoint not in ("any", target.endpoint):
        return False
    if fault.chain_id is not None and fault.chain_id != target.chain_id:
        return False
    if fault.spender is not None and fault.spender != target.spender:
        return False
    if fault.wallet is not None and fault.wallet not in target.polls:
        return False
    if fault.from_poll is None and fault.until_poll is None:
        return True
    poll = target.poll_for(fault.wallet)
    if fault.from_poll is not None and poll < fault.from_poll:
        return False
    return fault.until_poll is None or poll <= fault.until_poll


def truncated(payload: object) -> bytes:
    """The JSON of ``payload`` cut in half: it starts like the real answer but never ends."""
    text = json.dumps(payload).encode()
    return text[: max(1, len(text) // 2)]


def with_bad_amount(payload: Any, bad_amount: str) -> Any:
    """``payload`` with its first amount (in document order) replaced by ``bad_amount``.

    A payload without amounts (an empty answer) comes back unchanged.
    """
    _replace_first_amount(payload, bad_amount)
    return payload


def _replace_first_amount(node: Any, bad_amount: str) -> bool:
    if isinstance(node, list):
        return any(_replace_first_amount(item, bad_amount) for item in node)
    if not isinstance(node, dict):
        return False
    if "wallets" in node:
        return _replace_first_amount(node["wallets"], bad_amount)
    for key, value in node.items():
        if isinstance(value, str):
            node[key] = bad_amount
            return True
        if _replace_first_amount(value, bad_amount):
            return True
    return False


def with_missing_fields(payload: Any) -> Any:
    """For aggregated answers: drop ``tags`` and ``tracked`` everywhere and null the
    ``wallets`` of every second token (index 1, 3, ...), as in 1inch's own example.
    Other endpoints' answers come back unchanged."""
    if isinstance(payload, list):
        for index, token in enumerate(payload):
            token.pop("tags", None)
            token.pop("tracked", None)
            if index % 2 == 1:
                token["wallets"] = None
    return payload


def with_extra_fields(payload: Any) -> Any:
    """Fields the client does not know, where they cannot be mistaken for tokens or wallets:
    on each aggregated token and wallet entry, and on each ``{balance, allowance}`` entry.
    Answers that are flat ``{token: amount}`` maps come back unchanged."""
    if isinstance(payload, list):
        for token in payload:
            token["eip2612"] = False
            token["providers"] = ["1inch", "CoinGecko"]
            token["rating"] = 7
            for entry in (token.get("wallets") or {}).values():
                entry["usdValue"] = None
                entry["lastUpdated"] = 1_700_000_000
    elif isinstance(payload, dict):
        for value in payload.values():
            if isinstance(value, dict) and "balance" in value:
                value["blockNumber"] = 21_000_000
    return payload
