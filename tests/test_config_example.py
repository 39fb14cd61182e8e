"""``config.example.yaml`` shows every key README's configuration table documents, and loads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cli import EXIT_OK, main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"

COMMENTED_OUT = {
    # The default depends on where it runs ($STATE_DIRECTORY under systemd, else the working
    # directory): any URL written here would be wrong somewhere.
    "database.url",
    # These name files the example cannot ship beside itself.
    "metrics.web_config_file",
    "risk.denylist_file",
    # A provider URL carries a key: the example shows where it would go, as a comment.
    "chains[].rpc.url",
}
"""Keys the example may show only as a comment (``# key: value``) at their place."""


def documented_keys() -> list[str]:
    """The keys of the ``| `key` | default | meaning |`` table under README's
    "## Configuration" (a row may name several: `` `a.b`, `a.c` ``)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1]
    section = re.split(r"\n#{2,3} ", section, maxsplit=1)[0]
    keys = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        keys += re.findall(r"`([^`]+)`", first_cell)
    return keys


def uncommented(text: str) -> str:
    """The example with the allowed commented-out keys turned into YAML, where they stand."""
    leaves = "|".join(re.escape(key.rsplit(".", 1)[-1]) for key in COMMENTED_OUT)
    return re.sub(rf"^(\s*)# ((?:{leaves}): \S)", r"\1\2", text, flags=re.M)


def present(document: Any, key: str) -> bool:
    """Whether ``key`` (``a.b``, ``a[].b[]``) is in ``document``; a ``[]`` part must be a
    non-empty list, and some item of it must hold the rest."""
    head, _, rest = key.partition(".")
    is_list = head.endswith("[]")
    name = head.removesuffix("[]")
    if not isinstance(document, dict) or name not in document:
        return False
    value = document[name]
    if is_list:
        if not isinstance(value, list) or not value:
            return False
        return not rest or any(present(item, rest) for item in value)
    return not rest or present(value, rest)


def test_the_readme_table_is_found_and_parsed() -> None:
    keys = documented_keys()
    assert len(keys) > 30
    for expected in (
        "api.base_url",
        "api.backoff_initial_s",
        "api.backoff_max_s",
        "chains[].spenders[]",
        "risk.prices.enabled",
        "risk.prices.ttl_s",
        "poll.timeout_s",
    ):
        assert expected in keys


def test_the_example_shows_every_documented_key() -> None:
    text = EXAMPLE.read_text()
    as_written = yaml.safe_load(text)
    with_comments = yaml.safe_load(uncommented(text))
    missing = [
        key
        for key in documented_keys()
        if not present(as_written, key)
        and not (key in COMMENTED_OUT and present(with_comments, key))
    ]
    assert not missing, f"README documents keys config.example.yaml does not show: {missing}"


@pytest.mark.parametrize("key", sorted(COMMENTED_OUT))
def test_keys_shown_only_as_comments_are_documented_and_really_commented(key: str) -> None:
    assert key in documented_keys()
    assert not present(yaml.safe_load(EXAMPLE.read_text()), key)


def test_check_accepts_the_example_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ONEINCH_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["check", "--config", str(EXAMPLE)]) == EXIT_OK, capsys.readouterr().err
