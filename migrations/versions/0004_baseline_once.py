"""The baseline is stored once: the first poll that observed anything keeps its values as
versions only, and its change events (first observations, 0 -> value) are read back from
them (``monitor.store.queries.first_observations``). This deletes the events earlier versions
stored for it beside its versions; the downgrade writes them back from the versions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BASELINE = sa.text(
    "SELECT id FROM polls WHERE outcome != 'failed' ORDER BY finished_at, id LIMIT 1"
)


def upgrade() -> None:
    bind = op.get_bind()
    baseline = bind.execute(BASELINE).scalar()
    if baseline is None:
        return
    bind.execute(sa.text("DELETE FROM change_events WHERE poll_id = :p"), {"p": baseline})
    bind.execute(sa.text("UPDATE polls SET events = 0 WHERE id = :p"), {"p": baseline})


def downgrade() -> None:
    bind = op.get_bind()
    baseline = bind.execute(BASELINE).scalar()
    if baseline is None:
        return
    # Amounts are fixed-width decimal text on SQLite, NUMERIC(78, 0) on PostgreSQL.
    zero: str | int = f"{0:078d}" if bind.dialect.name == "sqlite" else 0
    params = {"p": baseline, "zero": zero}
    bind.execute(
        sa.text(
            "INSERT INTO change_events "
            "(poll_id, observed_at, chain_id, wallet, token, spender, change, old, new) "
            "SELECT v.poll_id, p.finished_at, v.chain_id, v.wallet, v.token, v.spender, "
            "'granted', :zero, v.amount FROM allowance_versions v JOIN polls p ON p.id = v.poll_id "
            "WHERE v.poll_id = :p AND v.amount != :zero "
            "ORDER BY v.chain_id, v.wallet, v.token, v.spender"
        ),
        params,
    )
    bind.execute(
        sa.text(
            "INSERT INTO change_events "
            "(poll_id, observed_at, chain_id, wallet, token, spender, change, old, new) "
            "SELECT v.poll_id, p.finished_at, v.chain_id, v.wallet, v.token, NULL, "
            "'balance_changed', :zero, v.amount FROM balance_versions v "
            "JOIN polls p ON p.id = v.poll_id "
            "WHERE v.poll_id = :p AND v.amount != :zero ORDER BY v.chain_id, v.wallet, v.token"
        ),
        params,
    )
    bind.execute(
        sa.text(
            "UPDATE polls SET events = (SELECT count(*) FROM change_events WHERE poll_id = :p) "
            "WHERE id = :p"
        ),
        {"p": baseline},
    )
