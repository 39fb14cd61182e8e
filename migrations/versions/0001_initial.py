"""The initial schema: polls, poll scopes, tokens, value versions and change events.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of monitor.store.types and monitor.domain.model as of this revision: a
# migration must create the same schema whatever those modules become.
UINT256_MAX = 2**256 - 1
AMOUNT = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")
ADDRESS = sa.String(42)
TIMESTAMP = sa.DateTime(timezone=True)


def amount_checks(table: str, *columns: str) -> list[sa.CheckConstraint]:
    """0 <= amount <= 2^256-1: numerically on PostgreSQL, on the 78-digit text on SQLite."""
    checks = []
    for column in columns:
        checks.append(
            sa.CheckConstraint(
                f"{column} >= 0 AND {column} <= {UINT256_MAX}",
                name=op.f(f"ck_{table}_{column}_uint256_pg"),
            ).ddl_if(dialect="postgresql")
        )
        checks.append(
            sa.CheckConstraint(
                f"length({column}) = 78 AND {column} NOT GLOB '*[^0-9]*' "
                f"AND {column} <= '{UINT256_MAX:078d}'",
                name=op.f(f"ck_{table}_{column}_uint256_sqlite"),
            ).ddl_if(dialect="sqlite")
        )
    return checks


def upgrade() -> None:
    op.create_table(
        "polls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("batches_failed", sa.Integer(), nullable=False),
        sa.Column("positions", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("versions_written", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_polls")),
        sa.CheckConstraint("outcome IN ('ok', 'partial', 'failed')", name=op.f("ck_polls_outcome")),
    )
    op.create_index(op.f("ix_polls_started_at"), "polls", ["started_at"])
    op.create_index(op.f("ix_polls_finished_at"), "polls", ["finished_at"])

    op.create_table(
        "poll_scopes",
        sa.Column("poll_id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("spender", ADDRESS, nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("batches_failed", sa.Integer(), nullable=False),
        sa.Column("positions", sa.Integer(), nullable=False),
        sa.Column("request_ids", sa.Text(), nullable=False),
        sa.Column("errors", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("poll_id", "chain_id", "spender", name=op.f("pk_poll_scopes")),
        sa.ForeignKeyConstraint(
            ["poll_id"],
            ["polls.id"],
            name=op.f("fk_poll_scopes_poll_id_polls"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        op.f("ix_poll_scopes_chain_spender"), "poll_scopes", ["chain_id", "spender", "poll_id"]
    )

    op.create_table(
        "tokens",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("address", ADDRESS, nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("decimals", sa.Integer(), nullable=True),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "address", name=op.f("pk_tokens")),
    )

    op.create_table(
        "allowance_versions",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("wallet", ADDRESS, nullable=False),
        sa.Column("token", ADDRESS, nullable=False),
        sa.Column("spender", ADDRESS, nullable=False),
        sa.Column("poll_id", sa.Integer(), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.PrimaryKeyConstraint(
            "chain_id", "wallet", "token", "spender", "poll_id", name=op.f("pk_allowance_versions")
        ),
        sa.ForeignKeyConstraint(
            ["poll_id"],
            ["polls.id"],
            name=op.f("fk_allowance_versions_poll_id_polls"),
            ondelete="RESTRICT",
        ),
        *amount_checks("allowance_versions", "amount"),
    )
    op.create_index(op.f("ix_allowance_versions_poll_id"), "allowance_versions", ["poll_id"])

    op.create_table(
        "balance_versions",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("wallet", ADDRESS, nullable=False),
        sa.Column("token", ADDRESS, nullable=False),
        sa.Column("poll_id", sa.Integer(), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.PrimaryKeyConstraint(
            "chain_id", "wallet", "token", "poll_id", name=op.f("pk_balance_versions")
        ),
        sa.ForeignKeyConstraint(
            ["poll_id"],
            ["polls.id"],
            name=op.f("fk_balance_versions_poll_id_polls"),
            ondelete="RESTRICT",
        ),
        *amount_checks("balance_versions", "amount"),
    )
    op.create_index(op.f("ix_balance_versions_poll_id"), "balance_versions", ["poll_id"])

    op.create_table(
        "change_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("poll_id", sa.Integer(), nullable=False),
        sa.Column("observed_at", TIMESTAMP, nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("wallet", ADDRESS, nullable=False),
        sa.Column("token", ADDRESS, nullable=False),
        sa.Column("spender", ADDRESS, nullable=True),
        sa.Column("change", sa.String(24), nullable=False),
        sa.Column("old", AMOUNT, nullable=False),
        sa.Column("new", AMOUNT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_events")),
        sa.ForeignKeyConstraint(
            ["poll_id"],
            ["polls.id"],
            name=op.f("fk_change_events_poll_id_polls"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "poll_id",
            "chain_id",
            "wallet",
            "token",
            "spender",
            "change",
            name=op.f("uq_change_events_poll_id_chain_id_wallet_token_spender_change"),
        ),
        sa.CheckConstraint(
            "change IN ('granted', 'increased', 'decreased', 'revoked', 'became_unlimited', "
            "'no_longer_unlimited', 'balance_changed')",
            name=op.f("ck_change_events_change"),
        ),
        *amount_checks("change_events", "old", "new"),
    )
    op.create_index(op.f("ix_change_events_poll_id"), "change_events", ["poll_id"])
    op.create_index(op.f("ix_change_events_observed_at"), "change_events", ["observed_at"])


def downgrade() -> None:
    # Dropping a table drops its indexes; children before the polls they refer to.
    for table in (
        "change_events",
        "balance_versions",
        "allowance_versions",
        "tokens",
        "poll_scopes",
        "polls",
    ):
        op.drop_table(table)
