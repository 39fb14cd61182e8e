"""Findings with a lifecycle: opened when a rule first fires, resolved when it stops.

Suppressed findings are stored like the others (with ``suppressed`` set): suppression hides
a finding from metrics and alerts, never from the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.errors import StoreError
from monitor.risk.rules import Finding
from monitor.store.schema import FindingRow

FindingKey = tuple[str, int, str, str, str]
"""(rule, chain_id, wallet, spender, token or "")."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredFinding:
    rule: str
    severity: str
    chain_id: int
    wallet: str
    spender: str
    token: str | None
    detail: str
    suppressed: bool
    opened_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingChanges:
    opened: int
    resolved: int
    updated: int


def _key(rule: str, chain_id: int, wallet: str, spender: str, token: str | None) -> FindingKey:
    return (rule, chain_id, wallet, spender, token or "")


async def sync_findings(
    engine: AsyncEngine, findings: Iterable[Finding], *, now: datetime
) -> FindingChanges:
    """Open new findings, resolve vanished ones, update changed ones, in one transaction."""
    current = {_key(f.rule, f.chain_id, f.wallet, f.spender, f.token): f for f in findings}
    opened = resolved = updated = 0
    try:
        async with engine.begin() as conn:
            rows = (
                await conn.execute(select(FindingRow).where(FindingRow.resolved_at.is_(None)))
            ).all()
            open_rows = {_key(r.rule, r.chain_id, r.wallet, r.spender, r.token): r for r in rows}
            for key, row in open_rows.items():
                finding = current.get(key)
                if finding is None:
                    await conn.execute(
                        update(FindingRow).where(FindingRow.id == row.id).values(resolved_at=now)
                    )
                    resolved += 1
                elif (finding.severity, finding.detail, finding.suppressed) != (
                    row.severity,
                    row.detail,
                    row.suppressed,
                ):
                    await conn.execute(
                        update(FindingRow)
                        .where(FindingRow.id == row.id)
                        .values(
                            severity=finding.severity,
                            detail=finding.detail,
                            suppressed=finding.suppressed,
                        )
                    )
                    updated += 1
            new = [
                {
                    "rule": f.rule,
                    "severity": f.severity,
                    "chain_id": f.chain_id,
                    "wallet": f.wallet,
                    "spender": f.spender,
                    "token": f.token or "",
                    "detail": f.detail,
                    "suppressed": f.suppressed,
                    "opened_at": now,
                }
                for key, f in current.items()
                if key not in open_rows
            ]
            if new:
                await conn.execute(insert(FindingRow), new)
                opened = len(new)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"could not record findings: {type(exc).__name__}") from exc
    return FindingChanges(opened=opened, resolved=resolved, updated=updated)


async def list_findings(
    engine: AsyncEngine, *, include_resolved: bool = False
) -> list[StoredFinding]:
    """Open findings (and resolved ones when asked), oldest first."""
    query = select(FindingRow).order_by(FindingRow.opened_at, FindingRow.id)
    if not include_resolved:
        query = query.where(FindingRow.resolved_at.is_(None))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"could not read findings: {type(exc).__name__}") from exc
    return [
        StoredFinding(
            rule=r.rule,
            severity=r.severity,
            chain_id=r.chain_id,
            wallet=r.wallet,
            spender=r.spender,
            token=r.token or None,
            detail=r.detail,
            suppressed=r.suppressed,
            opened_at=r.opened_at,
            resolved_at=r.resolved_at,
        )
        for r in rows
    ]
