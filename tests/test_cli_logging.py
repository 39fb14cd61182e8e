"""The command line's global behaviour: log levels and formats, where the config file comes
from, and how fast ``--version`` answers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.cli import CONFIG_ENV, EXIT_CONFIG, EXIT_OK, main
from monitor.cli_logging import JsonLinesFormatter

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
HEAVY = ("aiohttp", "sqlalchemy", "alembic", "prometheus_client", "apscheduler", "yaml")


def sqlite_config(directory: Path) -> Path:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["database"] = {"url": f"sqlite+aiosqlite:///{directory / 'm.sqlite'}"}
    path = directory / "monitor.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--help"]])
def test_version_and_help_import_no_heavy_library(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        "from monitor.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "loaded += sorted(m for m in sys.modules if m.startswith('monitor.simulator'))\n"
        "print('LOADED', ','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.splitlines()[-1] == "LOADED ", result.stdout


def test_config_file_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ONEINCH_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv(CONFIG_ENV, str(EXAMPLE))
    assert main(["check"]) == EXIT_OK
    assert "ok" in capsys.readouterr().out


def test_an_explicit_config_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.yaml"))
    config = sqlite_config(tmp_path)
    assert main(["db", "current", "--config", str(config)]) == EXIT_OK
    assert capsys.readouterr().out.startswith("current: none (not migrated)\n")


@pytest.mark.parametrize(
    "argv", [["check"], ["run"], ["findings"], ["history"], ["db", "upgrade"], ["once"]]
)
def test_no_config_and_no_environment_is_a_usage_error_naming_both(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "--config FILE" in err and CONFIG_ENV in err


def test_one_shot_commands_keep_library_info_off_stderr_unless_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sqlite_config(tmp_path)
    # --log-level after the command, and info: alembic's "Running upgrade" stays off.
    assert main(["db", "upgrade", "--config", str(config), "--log-level", "info"]) == EXIT_OK
    assert "alembic" not in capsys.readouterr().err

    (tmp_path / "m.sqlite").unlink()
    assert main(["db", "upgrade", "--config", str(config), "--log-level", "debug"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "INFO alembic.runtime.migration: Running upgrade" in err


def test_logging_is_put_back_after_main(tmp_path: Path) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    assert main(["db", "current", "--config", str(sqlite_config(tmp_path))]) == EXIT_OK
    assert (root.handlers, root.level) == (handlers, level)


def test_json_lines_carry_time_level_logger_message_and_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("monitor.x").makeRecord(
            "monitor.x", logging.ERROR, __file__, 1, "poll %d failed", (7,), sys.exc_info()
        )
    line = JsonLinesFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error"
    assert entry["logger"] == "monitor.x"
    assert entry["message"] == "poll 7 failed"
    assert entry["time"].endswith("Z")
    assert entry["exc_info"].startswith("Traceback") and "RuntimeError: boom" in entry["exc_info"]
