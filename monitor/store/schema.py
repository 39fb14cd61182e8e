"""The tables. Position values are versioned: a row is written only when a value changes.

- ``polls``: one row per poll, whatever its outcome.
- ``poll_scopes``: one row per (poll, chain, spender): batches, failures, request ids.
- ``allowance_versions`` / ``balance_versions``: the value of a key from the poll that first
  observed it until the next version of the same key. Zero is stored (it ends a value).
- ``change_events``: the typed diff, stored with the poll that observed it; the baseline poll
  (the first that observed anything) stores none: its versions are its first observations.
- ``tokens``: token metadata as 1inch last described it.
- ``discovery_cursors`` / ``discovered_approvals`` / ``discovery_nft_counts``: chain
  discovery's progress per (chain, wallet), the approval pairs its logs named, and how many
  ERC-721 approvals it saw.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from monitor.domain.model import UINT256_MAX
from monitor.store.types import AMOUNT_BYTES, Address, Uint256, UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ADDRESS = Address()
"""Every address column: 20 bytes (``monitor.store.types.Address``)."""


def _amount_checks(*columns: str) -> list[CheckConstraint]:
    """0 <= amount <= 2^256-1, enforced by the database itself. PostgreSQL: on the number.
    SQLite: on the shape of ``monitor.store.types.encode_amount``: a blob whose first byte
    counts the bytes after it (at most 32), the first of which is not zero."""
    checks = []
    for column in columns:
        checks.append(
            CheckConstraint(
                f"{column} >= 0 AND {column} <= {UINT256_MAX}", name=f"{column}_uint256_pg"
            ).ddl_if(dialect="postgresql")
        )
        checks.append(
            CheckConstraint(
                f"typeof({column}) = 'blob' AND length({column}) BETWEEN 1 AND {AMOUNT_BYTES} "
                f"AND hex(substr({column}, 1, 1)) = printf('%02X', length({column}) - 1) "
                f"AND (length({column}) = 1 OR substr({column}, 2, 1) != x'00')",
                name=f"{column}_uint256_sqlite",
            ).ddl_if(dialect="sqlite")
        )
    return checks


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Poll(Base):
    __tablename__ = "polls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    batches: Mapped[int] = mapped_column(Integer)
    batches_failed: Mapped[int] = mapped_column(Integer)
    positions: Mapped[int] = mapped_column(Integer)
    events: Mapped[int] = mapped_column(Integer)
    versions_written: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (CheckConstraint("outcome IN ('ok', 'partial', 'failed')", name="outcome"),)


class PollScope(Base):
    __tablename__ = "poll_scopes"

    poll_id: Mapped[int] = mapped_column(
        ForeignKey("polls.id", ondelete="CASCADE"), primary_key=True
    )
    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spender: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    batches: Mapped[int] = mapped_column(Integer)
    batches_failed: Mapped[int] = mapped_column(Integer)
    positions: Mapped[int] = mapped_column(Integer)
    request_ids: Mapped[str] = mapped_column(Text)
    """Space-separated X-Request-Id values of the scope's requests, in batch order."""
    errors: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_poll_scopes_chain_spender", "chain_id", "spender", "poll_id"),)


class TokenRow(Base):
    __tablename__ = "tokens"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    symbol: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    decimals: Mapped[int | None] = mapped_column(Integer)
    tags: Mapped[str] = mapped_column(Text)
    """Space-separated 1inch tags (``native``, ``PEG:ETH``, ...)."""


class AllowanceVersion(Base):
    __tablename__ = "allowance_versions"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    token: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    spender: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    poll_id: Mapped[int] = mapped_column(
        ForeignKey("polls.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    amount: Mapped[int] = mapped_column(Uint256)

    __table_args__ = tuple(_amount_checks("amount"))


class BalanceVersion(Base):
    __tablename__ = "balance_versions"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    token: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    poll_id: Mapped[int] = mapped_column(
        ForeignKey("polls.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    amount: Mapped[int] = mapped_column(Uint256)

    __table_args__ = tuple(_amount_checks("amount"))


class ChangeEventRow(Base):
    __tablename__ = "change_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    poll_id: Mapped[int] = mapped_column(ForeignKey("polls.id", ondelete="CASCADE"), index=True)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    chain_id: Mapped[int] = mapped_column(Integer)
    wallet: Mapped[str] = mapped_column(ADDRESS)
    token: Mapped[str] = mapped_column(ADDRESS)
    spender: Mapped[str | None] = mapped_column(ADDRESS)
    change: Mapped[str] = mapped_column(String(24))
    old: Mapped[int] = mapped_column(Uint256)
    new: Mapped[int] = mapped_column(Uint256)

    __table_args__ = (
        UniqueConstraint("poll_id", "chain_id", "wallet", "token", "spender", "change"),
        CheckConstraint(
            "change IN ('granted', 'increased', 'decreased', 'revoked', 'became_unlimited', "
            "'no_longer_unlimited', 'balance_changed')",
            name="change",
        ),
        *_amount_checks("old", "new"),
    )


class FindingRow(Base):
    """A risk finding from the poll that opened it until the poll that no longer found it."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    chain_id: Mapped[int] = mapped_column(Integer)
    wallet: Mapped[str] = mapped_column(ADDRESS)
    spender: Mapped[str] = mapped_column(ADDRESS)
    token: Mapped[str] = mapped_column(ADDRESS)
    """Empty for findings about a (wallet, spender) pair as a whole (value at risk)."""
    detail: Mapped[str] = mapped_column(Text)
    suppressed: Mapped[bool] = mapped_column(Boolean)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    """Indexed for loading the open findings (``IS NULL``). Nothing reads findings by their
    key: open ones are compared with each evaluation in memory and written by id. Nor by
    ``opened_at``: ``findings`` lists every row it reads in that order, a sort."""


class DiscoveryCursor(Base):
    """Chain discovery: the next block to scan for a wallet's ``Approval`` logs. Every block
    below it, from the configured ``start_block`` on, has been scanned. Only moves forward."""

    __tablename__ = "discovery_cursors"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    next_block: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DiscoveredApprovalRow(Base):
    """A (wallet, token, spender) pair that at least one ERC-20 ``Approval`` log names.

    Which pairs exist and when they were last approved: never the logs' values (the live
    ``allowance()`` read is the truth; a ``transferFrom`` lowers it without any log).
    """

    __tablename__ = "discovered_approvals"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    token: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    spender: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    first_block: Mapped[int] = mapped_column(BigInteger)
    last_block: Mapped[int] = mapped_column(BigInteger)
    last_approved_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """The block time of ``last_block``, the pair's newest ``Approval`` log."""
    discovered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When the pair was first stored."""


class DiscoveryNftCount(Base):
    """ERC-721 ``Approval`` logs (four topics) seen per chain by discovery, kept for later."""

    __tablename__ = "discovery_nft_counts"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nft_approvals: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SpenderCode(Base):
    """Whether a spender has contract code, as the chain reader last read it: an approval
    to an address with none is the ``eoa_spender`` finding, known again after a restart."""

    __tablename__ = "spender_code"

    chain_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spender: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    has_code: Mapped[bool] = mapped_column(Boolean)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
