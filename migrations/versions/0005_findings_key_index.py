"""Drop ``ix_findings_open_key``: no query reads findings by their key.

Open findings are compared with each evaluation in memory (``monitor.store.findings``),
loaded through ``ix_findings_resolved_at`` and written by id; the key index was kept up on
every opened finding and read by nothing. At 266,000 findings it was 47 MB of a first poll's
278 MB on SQLite, and its upkeep part of that poll's CPU. The downgrade builds it again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_findings_open_key", table_name="findings")


def downgrade() -> None:
    op.create_index(
        "ix_findings_open_key", "findings", ["rule", "chain_id", "wallet", "spender", "token"]
    )
