"""What each wallet holds and has approved at a given poll: the simulator's source of truth.

Two ledgers implement ``Ledger``: ``ScenarioLedger`` answers from a scenario's explicit
``balances``, ``allowances`` and ``timeline``; ``GeneratedLedger`` (in ``generator``) computes
a large world on demand. The native coin's pseudo-allowance is the server's business, not the
ledger's: ledgers are only asked about ERC-20 allowances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from monitor.simulator.model import Scenario, TokenSpec


class Ledger(Protocol):
    """Amounts as of poll ``poll`` and ``elapsed_s`` seconds after the simulator started."""

    def balance(
        self, chain_id: int, wallet: str, token: TokenSpec, poll: int, elapsed_s: float
    ) -> int:
        """The balance of ``token`` held by ``wallet`` (lowercase addresses)."""
        ...

    def allowance(
        self,
        chain_id: int,
        wallet: str,
        token: TokenSpec,
        spender: str,
        poll: int,
        elapsed_s: float,
    ) -> int:
        """What ``spender`` may move of ``wallet``'s ``token``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Change:
    at_poll: int | None
    at_s: float | None
    amount: int

    def reached(self, poll: int, elapsed_s: float) -> bool:
        if self.at_poll is not None:
            return poll >= self.at_poll
        return self.at_s is not None and elapsed_s >= self.at_s


_BalanceKey = tuple[int, str, str]
_AllowanceKey = tuple[int, str, str, str]


class ScenarioLedger:
    """Answers from the scenario's starting positions and its timeline.

    When several reached events set the same position, poll events apply in ``at_poll``
    order, then time events in ``at_s`` order (file order breaks ties): the last one wins.
    """

    def __init__(self, scenario: Scenario) -> None:
        self._balances: dict[_BalanceKey, int] = {
            (b.chain_id, b.wallet, b.token): b.amount for b in scenario.balances
        }
        self._allowances: dict[_AllowanceKey, int] = {
            (a.chain_id, a.wallet, a.token, a.spender): a.amount for a in scenario.allowances
        }
        self._balance_changes: dict[_BalanceKey, list[_Change]] = {}
        self._allowance_changes: dict[_AllowanceKey, list[_Change]] = {}
        ordered = sorted(
            scenario.timeline,
            key=lambda e: (0, e.at_poll, 0.0) if e.at_poll is not None else (1, 0, e.at_s or 0.0),
        )
        for event in ordered:
            if (b := event.set_balance) is not None:
                self._balance_changes.setdefault((b.chain_id, b.wallet, b.token), []).append(
                    _Change(at_poll=event.at_poll, at_s=event.at_s, amount=b.amount)
                )
            if (a := event.set_allowance) is not None:
                key = (a.chain_id, a.wallet, a.token, a.spender)
                self._allowance_changes.setdefault(key, []).append(
                    _Change(at_poll=event.at_poll, at_s=event.at_s, amount=a.amount)
                )

    def balance(
        self, chain_id: int, wallet: str, token: TokenSpec, poll: int, elapsed_s: float
    ) -> int:
        key = (chain_id, wallet, token.address)
        value = self._balances.get(key, 0)
        for change in self._balance_changes.get(key, ()):
            if change.reached(poll, elapsed_s):
                value = change.amount
        return value

    def allowance(
        self,
        chain_id: int,
        wallet: str,
        token: TokenSpec,
        spender: str,
        poll: int,
        elapsed_s: float,
    ) -> int:
        key = (chain_id, wallet, token.address, spender)
        value = self._allowances.get(key, 0)
        for change in self._allowance_changes.get(key, ()):
            if change.reached(poll, elapsed_s):
                value = change.amount
        return value
