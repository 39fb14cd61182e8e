"""Chain discovery: per-(chain, wallet) scan cursors, the approval pairs found in logs, a
count of ERC-721 approvals seen, and whether each spender has contract code.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADDRESS = sa.String(42)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "discovery_cursors",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("wallet", ADDRESS, nullable=False),
        sa.Column("next_block", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "wallet", name=op.f("pk_discovery_cursors")),
    )
    op.create_table(
        "discovered_approvals",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("wallet", ADDRESS, nullable=False),
        sa.Column("token", ADDRESS, nullable=False),
        sa.Column("spender", ADDRESS, nullable=False),
        sa.Column("first_block", sa.BigInteger(), nullable=False),
        sa.Column("last_block", sa.BigInteger(), nullable=False),
        sa.Column("last_approved_at", TIMESTAMP, nullable=False),
        sa.Column("discovered_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint(
            "chain_id", "wallet", "token", "spender", name=op.f("pk_discovered_approvals")
        ),
    )
    op.create_table(
        "discovery_nft_counts",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("nft_approvals", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_discovery_nft_counts")),
    )
    op.create_table(
        "spender_code",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("spender", ADDRESS, nullable=False),
        sa.Column("has_code", sa.Boolean(), nullable=False),
        sa.Column("checked_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "spender", name=op.f("pk_spender_code")),
    )


def downgrade() -> None:
    op.drop_table("spender_code")
    op.drop_table("discovery_nft_counts")
    op.drop_table("discovered_approvals")
    op.drop_table("discovery_cursors")
