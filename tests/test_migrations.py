"""The Alembic migrations against SQLite and PostgreSQL: they build exactly the models'
schema, undo it, run inside an event loop, exclude each other, and keep amounts exact."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.domain.model import UINT256_MAX
from monitor.errors import StoreError
from monitor.store import migrate, types
from monitor.store.engine import create_engine
from monitor.store.schema import (
    AllowanceVersion,
    BalanceVersion,
    Base,
    ChangeEventRow,
    FindingRow,
    Poll,
)
from tests.databases import postgres_database

ROOT = Path(__file__).resolve().parent.parent
MODEL_TABLES = set(Base.metadata.tables)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


def schema_of(conn: Connection) -> dict[str, Any]:
    """Everything reflection tells about each table, in a comparable form."""
    inspector = sa.inspect(conn)
    dialect = conn.dialect

    def checks(table: str) -> list[tuple[str | None, str]]:
        found = inspector.get_check_constraints(table)
        return sorted((c["name"], re.sub(r"\s+", " ", c["sqltext"])) for c in found)

    return {
        table: {
            "columns": [
                (
                    c["name"],
                    str(c["type"].compile(dialect=dialect)),
                    c["nullable"],
                    c.get("default"),
                    c.get("autoincrement"),
                )
                for c in inspector.get_columns(table)
            ],
            "pk": inspector.get_pk_constraint(table),
            "fks": sorted(
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    str(fk["options"]),
                )
                for fk in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), i["unique"])
                for i in inspector.get_indexes(table)
            ),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "checks": checks(table),
        }
        for table in sorted(inspector.get_table_names())
        if table != "alembic_version"
    }


async def test_upgrade_downgrade_upgrade_and_the_models_agree(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert await migrate.current(engine) is None
        await migrate.upgrade(engine)
        assert await migrate.current(engine) == migrate.head()
        assert await table_names(engine) == MODEL_TABLES | {"alembic_version"}
        assert await migrate.pending_model_changes(engine) == []

        await migrate.downgrade(engine, "base")
        assert await migrate.current(engine) is None
        assert await table_names(engine) == {"alembic_version"}

        await migrate.upgrade(engine)
        assert await migrate.current(engine) == migrate.head()
        assert await migrate.pending_model_changes(engine) == []
    finally:
        await engine.dispose()


async def test_every_revision_upgrades_and_downgrades_one_step_at_a_time(database_url: str) -> None:
    oldest_first = migrate.revisions()[::-1]
    engine = create_engine(database_url)
    try:
        for revision in oldest_first:
            await migrate.upgrade(engine, revision)
            assert await migrate.current(engine) == revision
        for previous in [*oldest_first[-2::-1], None]:
            await migrate.downgrade(engine, "-1")
            assert await migrate.current(engine) == previous
        assert await table_names(engine) == {"alembic_version"}
    finally:
        await engine.dispose()


async def test_the_psycopg_driver_migrates_postgresql_too() -> None:
    with postgres_database() as url:
        engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
        try:
            await migrate.upgrade(engine)
            assert await migrate.current(engine) == migrate.head()
            assert await migrate.pending_model_changes(engine) == []
            await migrate.downgrade(engine, "base")
            assert await table_names(engine) == {"alembic_version"}
            await migrate.upgrade(engine)
            assert await migrate.pending_model_changes(engine) == []
        finally:
            await engine.dispose()


async def test_migrations_build_exactly_what_create_all_builds(database_url: str) -> None:
    """Including every CHECK constraint, which autogenerate's comparison does not see."""
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            migrated = await conn.run_sync(schema_of)
        await migrate.downgrade(engine, "base")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with engine.connect() as conn:
            created = await conn.run_sync(schema_of)
        assert set(migrated) == MODEL_TABLES
        assert migrated == created
        suffix = "_pg" if engine.dialect.name == "postgresql" else "_sqlite"
        amount_checks = [
            n for n, _ in migrated["change_events"]["checks"] if "uint256" in (n or "")
        ]
        assert amount_checks and all(n.endswith(suffix) for n in amount_checks)
    finally:
        await engine.dispose()


async def test_upgrade_runs_inside_a_running_event_loop(database_url: str) -> None:
    asyncio.get_running_loop()  # the point of this test: the daemon migrates from async code
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        assert await migrate.current(engine) == migrate.head()
    finally:
        await engine.dispose()


async def test_env_py_refuses_to_start_its_own_loop_inside_a_running_one() -> None:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    with pytest.raises(CommandError, match="running event loop"):
        command.upgrade(config, "head")


@pytest.mark.slow
def test_the_developers_alembic_cli_connects_by_itself(database_url: str) -> None:
    alembic = [
        sys.executable,
        "-m",
        "alembic",
        "-c",
        str(ROOT / "alembic.ini"),
        "-x",
        f"url={database_url}",
    ]
    upgraded = subprocess.run(
        [*alembic, "upgrade", "head"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert upgraded.returncode == 0, upgraded.stderr
    checked = subprocess.run(
        [*alembic, "check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr
    current = subprocess.run(
        [*alembic, "current"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert f"{migrate.head()} (head)" in current.stdout


async def test_a_failed_upgrade_leaves_nothing_behind(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE tokens (x INTEGER)")  # in the way of 0001
        with pytest.raises(StoreError, match="could not upgrade to head"):
            await migrate.upgrade(engine)
        assert await table_names(engine) == {"tokens"}
        assert await migrate.current(engine) is None
    finally:
        await engine.dispose()


async def test_concurrent_upgrades_both_succeed_and_leave_one_schema(database_url: str) -> None:
    engines = [create_engine(database_url), create_engine(database_url)]
    try:
        await asyncio.gather(*(migrate.upgrade(engine) for engine in engines))
        assert await migrate.current(engines[0]) == migrate.head()
        assert await migrate.pending_model_changes(engines[0]) == []
        async with engines[0].connect() as conn:
            versions = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).all()
        assert [v for (v,) in versions] == [migrate.head()]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_upgrade_waits_for_the_postgresql_advisory_lock() -> None:
    with postgres_database() as url:
        engine = create_engine(url)
        try:
            async with engine.connect() as holder:
                await holder.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": migrate.MIGRATION_LOCK_KEY},
                )
                upgrading = asyncio.create_task(migrate.upgrade(engine))
                await wait_for_lock_waiter(engine)
                assert not upgrading.done()
                assert await migrate.current(engine) is None
                await holder.commit()  # releases the lock
            await upgrading
            assert await migrate.current(engine) == migrate.head()
        finally:
            await engine.dispose()


async def wait_for_lock_waiter(engine: AsyncEngine) -> None:
    """Until a session waits for MIGRATION_LOCK_KEY (pg_locks splits it in two 32-bit halves)."""
    key = migrate.MIGRATION_LOCK_KEY
    query = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid = :high AND objid = :low AND objsubid = 1"
    )
    for _ in range(500):
        async with engine.connect() as conn:
            waiting = (
                await conn.execute(query, {"high": key >> 32, "low": key & 0xFFFFFFFF})
            ).scalar()
        if waiting:
            return
        await asyncio.sleep(0.01)
    pytest.fail("no session ever waited for the migration lock")


async def test_errors_name_the_database_and_never_its_password() -> None:
    engine = create_engine("postgresql+asyncpg://postgres:s3cret@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(StoreError) as caught:
            await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    message = str(caught.value)
    assert message.startswith(
        "postgresql+asyncpg://postgres:***@127.0.0.1:1/nowhere: could not upgrade"
    )
    assert "s3cret" not in message
    assert caught.value.database == "postgresql+asyncpg://postgres:***@127.0.0.1:1/nowhere"


async def test_an_unknown_revision_is_a_store_error(migrated_engine: AsyncEngine) -> None:
    with pytest.raises(StoreError, match="could not downgrade to nonsense"):
        await migrate.downgrade(migrated_engine, "nonsense")
    assert await migrate.current(migrated_engine) == migrate.head()


async def test_sqlite_foreign_keys_are_back_on_after_a_migration(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fk.sqlite'}", pool_size=1)
    try:
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await engine.dispose()


async def test_a_sqlite_migration_that_breaks_foreign_keys_is_rolled_back(tmp_path: Path) -> None:
    """Foreign keys are off while SQLite migrates (tables get recreated), checked at the end."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fk.sqlite'}")
    try:
        await migrate.upgrade(engine)
        with pytest.raises(StoreError, match="would break foreign keys in balance_versions"):
            async with engine.connect() as conn, migrate._exclusive_transaction(conn):
                await conn.exec_driver_sql(
                    "INSERT INTO balance_versions VALUES "
                    f"(1, x'{'11' * 20}', x'{'22' * 20}', 42, x'00')"
                )
        async with engine.connect() as conn:
            assert (
                await conn.exec_driver_sql("SELECT count(*) FROM balance_versions")
            ).scalar() == 0
    finally:
        await engine.dispose()


async def test_pending_model_changes_describes_each_difference(
    migrated_engine: AsyncEngine,
) -> None:
    async with migrated_engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE polls DROP COLUMN error")
        await conn.exec_driver_sql("ALTER TABLE tokens ADD COLUMN logo TEXT")
        await conn.exec_driver_sql("DROP INDEX ix_polls_started_at")
        await conn.exec_driver_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    problems = await migrate.pending_model_changes(migrated_engine)
    assert sorted(problems) == [
        "column polls.error: missing from the database",
        "column tokens.logo: in the database but not in the models",
        "index ix_polls_started_at on polls: missing from the database",
        "table notes: in the database but not in the models",
    ]


async def test_pending_model_changes_sees_types_and_check_constraints_on_postgresql() -> None:
    with postgres_database() as url:
        engine = create_engine(url)
        try:
            await migrate.upgrade(engine)
            async with engine.begin() as conn:
                await conn.exec_driver_sql(
                    "ALTER TABLE polls ALTER COLUMN outcome TYPE VARCHAR(20)"
                )
                await conn.exec_driver_sql(
                    "ALTER TABLE balance_versions DROP CONSTRAINT ck_balance_versions_amount_uint256_pg"
                )
                await conn.exec_driver_sql(
                    "ALTER TABLE tokens ADD CONSTRAINT ck_extra CHECK (decimals < 99)"
                )
            problems = await migrate.pending_model_changes(engine)
        finally:
            await engine.dispose()
    assert sorted(problems) == [
        "column polls.outcome: type VARCHAR(20) in the database, VARCHAR(16) in the models",
        "table balance_versions: CHECK constraint ck_balance_versions_amount_uint256_pg is "
        "missing from the database",
        "table tokens: CHECK constraint ck_extra is in the database but not in the models",
    ]


def test_autogenerate_writes_plain_column_types(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=migrate.context_options("sqlite"))
            script = produce_migrations(context, Base.metadata)
            code = render_python_code(script.upgrade_ops, render_item=migrate.render_item)
    finally:
        engine.dispose()
    assert (
        "sa.Column('amount', sa.Numeric(78, 0).with_variant(sa.LargeBinary(33), \"sqlite\")" in code
    )
    assert "sa.Column('wallet', sa.LargeBinary(20)" in code
    assert "sa.Column('observed_at', sa.DateTime(timezone=True)" in code
    assert "monitor" not in code


async def insert_poll(conn: Any) -> int:
    result = await conn.execute(
        sa.insert(Poll).values(
            started_at=T0,
            finished_at=T0,
            outcome="ok",
            batches=1,
            batches_failed=0,
            positions=0,
            events=0,
            versions_written=0,
        )
    )
    return int(result.inserted_primary_key[0])


async def test_uint256_max_round_trips_exactly(migrated_engine: AsyncEngine) -> None:
    async with migrated_engine.begin() as conn:
        poll_id = await insert_poll(conn)
        await conn.execute(
            sa.insert(BalanceVersion).values(
                chain_id=1,
                wallet="0x" + "1" * 40,
                token="0x" + "2" * 40,
                poll_id=poll_id,
                amount=UINT256_MAX,
            )
        )
    async with migrated_engine.connect() as conn:
        amount = (await conn.execute(sa.select(BalanceVersion.amount))).scalar_one()
    assert type(amount) is int
    assert amount == UINT256_MAX


async def test_addresses_are_stored_as_their_20_bytes_and_read_back_as_text(
    migrated_engine: AsyncEngine,
) -> None:
    wallet, token = "0x" + "0123456789abcdef" * 2 + "00ff00ff", "0x" + "00" * 20
    async with migrated_engine.begin() as conn:
        poll_id = await insert_poll(conn)
        await conn.execute(
            sa.insert(BalanceVersion).values(
                chain_id=1, wallet=wallet, token=token, poll_id=poll_id, amount=7
            )
        )
    async with migrated_engine.connect() as conn:
        row = (await conn.execute(sa.select(BalanceVersion.wallet, BalanceVersion.token))).one()
        stored = (
            await conn.exec_driver_sql("SELECT length(wallet), length(token) FROM balance_versions")
        ).one()
    assert tuple(row) == (wallet, token)
    assert tuple(stored) == (20, 20)


@pytest.mark.parametrize(
    "spelling",
    [
        "0x" + "AB" * 20,  # checksummed or upper case: it would come back spelled otherwise
        "0xabc",
        "w1",
        "0x" + "g" * 40,
        "0x" + "ab" * 19 + " a",
        "ab" * 21,
    ],
)
async def test_an_address_spelled_otherwise_is_refused_before_anything_is_stored(
    migrated_engine: AsyncEngine, spelling: str
) -> None:
    async with migrated_engine.begin() as conn:
        poll_id = await insert_poll(conn)
    with pytest.raises(sa.exc.StatementError, match="not an address"):
        async with migrated_engine.begin() as conn:
            await conn.execute(
                sa.insert(BalanceVersion).values(
                    chain_id=1, wallet=spelling, token="0x" + "00" * 20, poll_id=poll_id, amount=7
                )
            )
    async with migrated_engine.connect() as conn:
        assert (await conn.scalar(sa.select(sa.func.count()).select_from(BalanceVersion))) == 0


def raw_amounts(dialect: str) -> list[str]:
    """SQL literals the database's own CHECK must refuse (bypassing the Uint256 type)."""
    if dialect == "postgresql":
        return [str(UINT256_MAX + 1), "-1"]
    # The blob form (``monitor.store.types.encode_amount``): a length byte, then the bytes.
    return [
        "x'21" + "01" + "00" * 32 + "'",  # 2^256: 33 bytes after the length byte
        "x'0200ff'",  # a leading zero byte: 255 spelled a second way
        "x'0201'",  # the length byte says 2, one follows
        "x''",  # empty
        "'" + f"{UINT256_MAX:078d}" + "'",  # the old text form
        "5",  # an integer
    ]


async def test_the_database_itself_refuses_amounts_outside_uint256(
    migrated_engine: AsyncEngine,
) -> None:
    dialect = migrated_engine.dialect.name
    async with migrated_engine.begin() as conn:
        poll_id = await insert_poll(conn)
    accepted_max = "x'20" + "ff" * 32 + "'" if dialect == "sqlite" else str(UINT256_MAX)
    wallet = "x'{:040x}'" if dialect == "sqlite" else "'\\x{:040x}'"
    insert = (
        "INSERT INTO balance_versions (chain_id, wallet, token, poll_id, amount) "
        "VALUES (1, {w}, " + wallet.format(0xAA) + ", {p}, {a})"
    )
    async with migrated_engine.begin() as conn:
        await conn.exec_driver_sql(insert.format(w=wallet.format(99), p=poll_id, a=accepted_max))
    for index, literal in enumerate(raw_amounts(dialect)):
        with pytest.raises(IntegrityError, match=r"(?i)check"):
            async with migrated_engine.begin() as conn:
                await conn.exec_driver_sql(
                    insert.format(w=wallet.format(index), p=poll_id, a=literal)
                )
    async with migrated_engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM balance_versions")).scalar() == 1


AMOUNTS = sorted(
    [0, 1, 9, 10, 99, 100, 12_345, 2**64, 10**30, 2**96 - 1, 2**255, UINT256_MAX - 1, UINT256_MAX]
)


async def test_amounts_order_and_compare_numerically(migrated_engine: AsyncEngine) -> None:
    async with migrated_engine.begin() as conn:
        poll_id = await insert_poll(conn)
        await conn.execute(
            sa.insert(BalanceVersion),
            [
                {
                    "chain_id": 1,
                    "wallet": f"0x{i:040x}",
                    "token": "0x" + "ab" * 20,
                    "poll_id": poll_id,
                    "amount": amount,
                }
                # Inserted in an order that is neither numeric nor by digit count.
                for i, amount in enumerate(sorted(AMOUNTS, key=lambda a: str(a)))
            ],
        )
    amount = BalanceVersion.amount
    async with migrated_engine.connect() as conn:

        async def amounts(query: sa.Select[tuple[int]]) -> list[int]:
            return list((await conn.execute(query)).scalars())

        assert await amounts(sa.select(amount).order_by(amount)) == AMOUNTS
        assert await amounts(sa.select(amount).order_by(amount.desc())) == AMOUNTS[::-1]
        assert await amounts(sa.select(amount).where(amount > 99).order_by(amount)) == [
            a for a in AMOUNTS if a > 99
        ]
        assert await amounts(sa.select(amount).where(amount < 2**64).order_by(amount)) == [
            a for a in AMOUNTS if a < 2**64
        ]
        assert await amounts(
            sa.select(amount).where(amount >= 10, amount <= 2**96 - 1).order_by(amount)
        ) == [a for a in AMOUNTS if 10 <= a <= 2**96 - 1]
        assert (await conn.execute(sa.select(sa.func.max(amount)))).scalar() == UINT256_MAX


async def test_engines_opening_a_new_sqlite_file_at_once_all_connect(tmp_path: Path) -> None:
    """Switching a new file to WAL from several connections at once can deadlock on its
    lock; SQLite then fails one at once, busy timeout or not. Every one must connect."""
    for attempt in range(15):
        url = f"sqlite+aiosqlite:///{tmp_path / f'new-{attempt}.sqlite'}"
        engines = [create_engine(url) for _ in range(6)]
        try:

            async def connect(engine: AsyncEngine) -> str:
                async with engine.connect() as conn:
                    mode = await conn.exec_driver_sql("PRAGMA journal_mode")
                    return str(mode.scalar_one())

            assert await asyncio.gather(*(connect(e) for e in engines)) == ["wal"] * 6
        finally:
            for engine in engines:
                await engine.dispose()


# -- 0006: addresses as bytes, SQLite amounts as length-prefixed bytes ---------------------------

WALLET = "0x" + "ab12" * 10
TOKEN = "0x" + "00" * 19 + "0f"
SPENDER = "0x" + "ff" * 20
OLD_AMOUNTS = [0, 1, 255, 256, 10**24 + 7, UINT256_MAX]


def _old_amount(dialect: str, value: int) -> str:
    return f"'{value:078d}'" if dialect == "sqlite" else str(value)


async def _seed_at_0005(engine: AsyncEngine) -> None:
    """Rows as revision 0005 stored them (addresses and SQLite amounts as text), by raw SQL."""
    dialect = engine.dialect.name
    async with engine.begin() as conn:
        poll_id = await insert_poll(conn)
        for index, value in enumerate(OLD_AMOUNTS):
            wallet = WALLET[:-2] + f"{index:02x}"
            await conn.exec_driver_sql(
                "INSERT INTO allowance_versions (chain_id, wallet, token, spender, poll_id, amount) "
                f"VALUES (1, '{wallet}', '{TOKEN}', '{SPENDER}', {poll_id}, "
                f"{_old_amount(dialect, value)})"
            )
        await conn.exec_driver_sql(
            "INSERT INTO change_events (poll_id, observed_at, chain_id, wallet, token, spender, "
            f"change, old, new) VALUES ({poll_id}, '2026-01-01 00:00:00', 1, '{WALLET}', "
            f"'{TOKEN}', NULL, 'balance_changed', {_old_amount(dialect, 5)}, "
            f"{_old_amount(dialect, UINT256_MAX)})"
        )
        await conn.exec_driver_sql(
            "INSERT INTO findings (rule, severity, chain_id, wallet, spender, token, detail, "
            f"suppressed, opened_at) VALUES ('value_at_risk', 'critical', 1, '{WALLET}', "
            f"'{SPENDER}', '', 'd', false, '2026-01-01 00:00:00')"
        )


async def _raw(engine: AsyncEngine, query: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.exec_driver_sql(query)).all()]


async def test_0006_converts_every_stored_value_and_back(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine, "0005")
        await _seed_at_0005(engine)
        before = [
            await _raw(engine, "SELECT wallet, token, spender, amount FROM allowance_versions"),
            await _raw(engine, "SELECT wallet, token, spender, old, new FROM change_events"),
            await _raw(engine, "SELECT wallet, spender, token FROM findings"),
        ]
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            allowances = (
                await conn.execute(
                    sa.select(
                        AllowanceVersion.wallet,
                        AllowanceVersion.token,
                        AllowanceVersion.spender,
                        AllowanceVersion.amount,
                    ).order_by(AllowanceVersion.amount)
                )
            ).all()
            event = (
                await conn.execute(sa.select(ChangeEventRow.spender, ChangeEventRow.new))
            ).one()
            finding = (await conn.execute(sa.select(FindingRow.wallet, FindingRow.token))).one()
        assert [tuple(r) for r in allowances] == [
            (WALLET[:-2] + f"{i:02x}", TOKEN, SPENDER, value) for i, value in enumerate(OLD_AMOUNTS)
        ]
        assert tuple(event) == (None, UINT256_MAX)
        assert tuple(finding) == (WALLET, "")
        raw = await _raw(engine, "SELECT wallet FROM findings")
        assert raw == [(bytes.fromhex(WALLET[2:]),)]
        assert await migrate.pending_model_changes(engine) == []

        await migrate.downgrade(engine, "0005")
        after = [
            await _raw(engine, "SELECT wallet, token, spender, amount FROM allowance_versions"),
            await _raw(engine, "SELECT wallet, token, spender, old, new FROM change_events"),
            await _raw(engine, "SELECT wallet, spender, token FROM findings"),
        ]
        assert after == before
    finally:
        await engine.dispose()


async def test_0006_stops_at_a_stored_value_that_is_no_address_and_changes_nothing(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine, "0005")
        await _seed_at_0005(engine)
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO tokens (chain_id, address, symbol, name, decimals, tags) "
                "VALUES (1, 'not-an-address', 'X', 'X', 18, '')"
            )
        before = await _raw(engine, "SELECT wallet, amount FROM allowance_versions")
        with pytest.raises(
            StoreError,
            match="table tokens, column address: a stored value is not an address: "
            "'not-an-address'; nothing was migrated",
        ):
            await migrate.upgrade(engine)
        assert await migrate.current(engine) == "0005"
        assert await _raw(engine, "SELECT wallet, amount FROM allowance_versions") == before
    finally:
        await engine.dispose()


def test_the_address_memos_stay_bounded_and_right_past_their_limit() -> None:
    """A portfolio with more addresses than the memos hold still converts every one right."""
    bind = types.Address().bind_processor(sa.create_engine("sqlite://").dialect)
    result = types.Address().result_processor(sa.create_engine("sqlite://").dialect, None)
    addresses = [f"0x{i:040x}" for i in range(types.MEMO_LIMIT + 100)]
    for address in addresses * 2:
        raw = bind(address)
        assert raw == bytes.fromhex(address[2:])
        assert result(raw) == address
    assert len(types._bytes_of) <= types.MEMO_LIMIT
    assert len(types._text_of) <= types.MEMO_LIMIT
    # A spelling refused once is refused again: nothing wrong is memoized.
    for _ in range(2):
        with pytest.raises(ValueError, match="not an address"):
            bind("0x" + "AB" * 20)


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_a_timestamp_bound_again_as_the_very_same_object_binds_the_same(
    dialect_name: str,
) -> None:
    """The timestamp's bind processor remembers the last object it converted: the same object
    again gives the same bound value, any other object is converted afresh (a naive one is
    refused even right after an aware one was remembered)."""
    dialect = (
        sa.create_engine("sqlite://").dialect
        if dialect_name == "sqlite"
        else sa.create_engine("postgresql+psycopg://u@h/d").dialect
    )
    bind = types.UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None
    fresh = types.UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert fresh is not None
    now = datetime(2026, 12, 3, 17, 0, 0, 123456, tzinfo=UTC)
    later = datetime(2026, 12, 3, 17, 0, 1, tzinfo=UTC)
    for value in (now, now, later, now, None, now):
        assert bind(value) == fresh(value)
    sqlite = sa.create_engine("sqlite://").dialect
    sqlite_text = types.UTCDateTime().dialect_impl(sqlite).bind_processor(sqlite)
    assert sqlite_text is not None and sqlite_text(now) == "2026-12-03 17:00:00.123456"
    bind(now)
    with pytest.raises(ValueError, match="naive datetimes are refused"):
        bind(now.replace(tzinfo=None))
