"""What a non-editable install contains. scripts/smoke-install builds and installs for real;
this catches the cheap mistakes first."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def setuptools_config() -> dict[str, Any]:
    document = tomllib.loads((ROOT / "pyproject.toml").read_text())
    config: dict[str, Any] = document["tool"]["setuptools"]
    return config


def packages_on_disk(folder: Path, name: str) -> set[str]:
    """Every folder is importable (``monitor/data`` as a namespace package)."""
    return {name} | {
        ".".join((name, *path.relative_to(folder).parts))
        for path in folder.rglob("*")
        if path.is_dir() and "__pycache__" not in path.parts
    }


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """The list is by hand (migrations/ installs as monitor.migrations): a new subpackage
    missing from it would be left out of the wheel without any other test noticing."""
    expected = packages_on_disk(ROOT / "monitor", "monitor") | packages_on_disk(
        ROOT / "migrations", "monitor.migrations"
    )
    listed = set(setuptools_config()["packages"])
    assert not expected - listed, "add to [tool.setuptools] packages in pyproject.toml"
    assert not listed - expected, "remove from [tool.setuptools] packages in pyproject.toml"


def test_the_migrations_folder_installs_as_monitor_migrations() -> None:
    config = setuptools_config()
    assert config["package-dir"] == {"monitor.migrations": "migrations"}
    assert config["package-data"]["monitor.migrations"] == ["script.py.mako"]
    assert (ROOT / "migrations" / "env.py").is_file()
    assert (ROOT / "migrations" / "script.py.mako").is_file()
