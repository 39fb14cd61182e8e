"""What the docs point at exists, and what they say of the CLI is what it does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from monitor.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CITING_DIRS = (
    "monitor",
    "docs",
    "tests",
    "benchmarks",
    "deploy",
    "systemd",
    "scripts",
    "migrations",
)
CITING_FILES = ("README.md", "config.example.yaml", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".toml", ".service", ".ini", ""}
# A file name ending in .md, with its folders, and an optional #anchor.
CITATION = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]+\.md)(?:#([\w-]+))?\b")


def citing_files() -> Iterator[Path]:
    for name in CITING_DIRS:
        for path in sorted((ROOT / name).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                yield path
    for name in CITING_FILES:
        yield ROOT / name


def heading_anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown``."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown.read_text(), re.M):
        text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_markdown_file_the_project_cites_is_in_the_project() -> None:
    unresolved: list[str] = []
    for path in citing_files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        for match in CITATION.finditer(text):
            cited, anchor = match.groups()
            # From the repository's root, or (a Markdown link) from the citing file's folder.
            target = next(
                (
                    t
                    for t in (ROOT / cited, path.parent / cited)
                    if t.is_file() and ROOT in t.parents
                ),
                None,
            )
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}: {match.group(0)}"
            if target is None:
                unresolved.append(where)
            elif anchor and anchor not in heading_anchors(target):
                unresolved.append(f"{where} (no such heading)")
    assert not unresolved, "cited but not in the project:\n" + "\n".join(unresolved)


def test_the_simulator_doc_gives_the_default_listen_address_of_simulate() -> None:
    default = build_parser().parse_args(["simulate"]).listen
    doc = (ROOT / "docs" / "simulator.md").read_text()
    (bare,) = re.findall(r"^exposure-monitor simulate +#.*$", doc, re.M)
    assert bare.endswith(f"on {default}")
    assert f"`--listen` defaults to `{default}`" in doc
    assert "free port>" not in doc
