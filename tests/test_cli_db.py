"""``exposure-monitor db``: upgrade, current and check, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from monitor.cli import EXIT_OK, EXIT_STORE, main
from monitor.store import migrate
from monitor.store.engine import create_engine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"


def config_for(url: str, directory: Path) -> Path:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["database"] = {"url": url}
    path = directory / "monitor.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def execute(url: str, *statements: str) -> None:
    async def run() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                for statement in statements:
                    await conn.exec_driver_sql(statement)
        finally:
            await engine.dispose()

    asyncio.run(run())


async def migrate_to(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine, revision)
    finally:
        await engine.dispose()


def db(command: str, config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["db", command, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_db_current_before_and_after_db_upgrade(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(database_url, tmp_path)
    head = migrate.head()
    assert db("current", config, capsys) == (
        EXIT_OK,
        f"current: none (not migrated)\nhead: {head}\n",
        "",
    )
    code, out, _ = db("upgrade", config, capsys)
    assert code == EXIT_OK
    assert out.endswith(f": upgraded from base to {head}\n")
    assert db("current", config, capsys) == (EXIT_OK, f"current: {head}\nhead: {head}\n", "")
    code, out, _ = db("upgrade", config, capsys)
    assert code == EXIT_OK
    assert out.endswith(f": already at {head} (head)\n")


@pytest.mark.slow
def test_db_upgrade_and_check_as_real_processes(database_url: str, tmp_path: Path) -> None:
    config = config_for(database_url, tmp_path)

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor", "db", command, "--config", str(config)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    upgraded = run("upgrade")
    assert upgraded.returncode == EXIT_OK, upgraded.stderr
    assert f"upgraded from base to {migrate.head()}" in upgraded.stdout
    checked = run("check")
    assert checked.returncode == EXIT_OK, checked.stderr
    assert "ok (revision" in checked.stdout


def test_db_check_passes_on_a_migrated_database(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(database_url, tmp_path)
    assert db("upgrade", config, capsys)[0] == EXIT_OK
    code, out, err = db("check", config, capsys)
    assert (code, err) == (EXIT_OK, "")
    assert out.endswith(f": ok (revision {migrate.head()}, schema matches the models)\n")


def test_db_check_fails_on_a_database_that_is_not_migrated(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = db("check", config_for(database_url, tmp_path), capsys)
    assert (code, out) == (EXIT_STORE, "")
    assert err.count("\n") == 1
    assert f"not migrated (no schema revision; head is {migrate.head()})" in err


def test_db_check_fails_when_a_column_was_dropped_by_hand(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(database_url, tmp_path)
    assert db("upgrade", config, capsys)[0] == EXIT_OK
    execute(database_url, "ALTER TABLE polls DROP COLUMN error")
    code, _, err = db("check", config, capsys)
    assert code == EXIT_STORE
    assert err.splitlines() == [
        f"exposure-monitor: {safe(database_url)}: column polls.error: missing from the database"
    ]


def test_db_check_fails_when_a_column_was_added_by_hand(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(database_url, tmp_path)
    assert db("upgrade", config, capsys)[0] == EXIT_OK
    execute(
        database_url,
        "ALTER TABLE tokens ADD COLUMN logo TEXT",
        "ALTER TABLE polls ADD COLUMN note TEXT",
    )
    code, _, err = db("check", config, capsys)
    assert code == EXIT_STORE
    assert sorted(err.splitlines()) == [
        f"exposure-monitor: {safe(database_url)}: column {column}: in the database but not in "
        "the models"
        for column in ("polls.note", "tokens.logo")
    ]


def test_db_check_fails_on_a_database_behind_the_newest_revision(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = migrate.revisions()[1]
    asyncio.run(migrate_to(database_url, older))
    code, _, err = db("check", config_for(database_url, tmp_path), capsys)
    assert code == EXIT_STORE
    assert err.splitlines() == [
        f"exposure-monitor: {safe(database_url)}: schema revision {older}, expected "
        f"{migrate.head()}: run `db upgrade`"
    ]


def test_db_check_fails_on_a_revision_this_version_does_not_know(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(database_url, tmp_path)
    assert db("upgrade", config, capsys)[0] == EXIT_OK
    execute(database_url, "UPDATE alembic_version SET version_num = '9999'")
    code, _, err = db("check", config, capsys)
    assert code == EXIT_STORE
    assert "schema revision 9999 is unknown to this version of exposure-monitor" in err


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://monitor:s3cret@127.0.0.1:1/nowhere",
        "postgresql+psycopg://monitor:s3cret@127.0.0.1:1/nowhere",
    ],
)
@pytest.mark.parametrize("command", ["current", "check", "upgrade"])
def test_db_commands_exit_4_when_the_database_cannot_be_reached(
    url: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = db(command, config_for(url, tmp_path), capsys)
    assert (code, out) == (EXIT_STORE, "")
    assert err.startswith(f"exposure-monitor: database error: {safe(url)}: could not ")
    assert "***" in err and "s3cret" not in err


@pytest.mark.slow
def test_db_current_exits_4_on_an_sqlite_file_that_cannot_be_opened(tmp_path: Path) -> None:
    # A real process: aiosqlite's worker thread outlives a failed connect and would report
    # into the next test's event loop.
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.sqlite'}"
    config = config_for(url, tmp_path)
    current = subprocess.run(
        [sys.executable, "-m", "monitor", "db", "current", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert current.returncode == EXIT_STORE
    assert "unable to open database file" in current.stderr


def safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def test_a_relative_sqlite_url_names_the_file_beside_the_config_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    config = config_for("sqlite+aiosqlite:///monitor.sqlite", etc)
    head = migrate.head()
    monkeypatch.chdir(elsewhere)
    code, out, _ = db("upgrade", config, capsys)
    assert (code, out) == (
        EXIT_OK,
        f"sqlite+aiosqlite:///{etc}/monitor.sqlite: upgraded from base to {head}\n",
    )
    monkeypatch.chdir(tmp_path)
    assert db("current", config, capsys) == (EXIT_OK, f"current: {head}\nhead: {head}\n", "")
    assert sorted(p.name for p in tmp_path.rglob("*.sqlite")) == ["monitor.sqlite"]
    assert (etc / "monitor.sqlite").is_file()


def test_every_db_command_uses_the_state_directory_as_the_daemon_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No database.url (the example's choice): under systemd the database is
    $STATE_DIRECTORY/exposure-monitor.sqlite for ``run`` and for ``db upgrade`` alike."""
    state = tmp_path / "state"
    state.mkdir()
    document = yaml.safe_load(EXAMPLE.read_text())
    assert "url" not in document.get("database", {})
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    monkeypatch.chdir(tmp_path)
    head = migrate.head()
    code, out, _ = db("upgrade", config, capsys)
    assert code == EXIT_OK
    assert out.startswith(f"sqlite+aiosqlite:///{state}/exposure-monitor.sqlite: upgraded")
    assert db("current", config, capsys) == (EXIT_OK, f"current: {head}\nhead: {head}\n", "")
    assert [p.name for p in tmp_path.rglob("*.sqlite")] == ["exposure-monitor.sqlite"]


@pytest.mark.slow
def test_history_from_another_directory_reads_what_once_recorded(tmp_path: Path) -> None:
    from tests.daemon_helpers import simulator_process

    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    with simulator_process() as base_url:
        document = yaml.safe_load(EXAMPLE.read_text())
        document["api"].update(base_url=base_url, requests_per_second=100)
        document["database"] = {"url": "sqlite+aiosqlite:///monitor.sqlite"}
        config = etc / "monitor.yaml"
        config.write_text(yaml.safe_dump(document))
        recorded = subprocess.run(
            [sys.executable, "-m", "monitor", "once", "--config", str(config)],
            cwd=etc, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert recorded.returncode == EXIT_OK, recorded.stderr
    read = subprocess.run(
        [sys.executable, "-m", "monitor", "history", "--config", str(config), "--format", "json"],
        cwd=elsewhere, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert read.returncode == EXIT_OK, read.stderr
    assert len(read.stdout.splitlines()) > 5  # the changes of the first poll
    assert list(elsewhere.iterdir()) == []
