"""The benchmark suite's small workload through its entry point, ``python -m benchmarks``.

A smoke test: it proves the suite still runs against the current code (simulator and worker
processes, the in-process ``Monitor``, the daemon and ``once`` as processes, the floors, the
storage probes, the report) and that its figures are consistent. It asserts nothing about
time or memory: the summary's rows must carry numbers, whatever they are.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

SUMMARY_FIGURES = (
    "CPU, unchanged daemon poll",
    "CPU, `once` as a whole process on an unchanged portfolio",
    "CPU, first poll (everything new)",
    "disk written by the first poll (SQLite)",
    "peak RSS",
    "`/metrics` p99 during a poll",
    "poll wall / (requests / R)",
    "daemon start to listening",
)
NUMBER = re.compile(r"\d")


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows by figure: [measured, floor, budget, verdict]."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Summary: issue 12"))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 4 :]:  # title, blank, header, rule
        if not line.startswith("| "):
            break
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


def test_small_workload_runs_and_reports_every_figure_beside_its_floor(tmp_path: Path) -> None:
    results_path = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--workload",
            "small",
            "--backend",
            "sqlite",
            "--json",
            str(results_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in ("CPU seconds per poll", "Rows and bytes written", "Peak resident memory"):
        assert heading in proc.stdout
    assert "budgets met" in proc.stdout

    rows = summary_rows(proc.stdout)
    assert len(rows) == len(SUMMARY_FIGURES)
    for figure in SUMMARY_FIGURES:
        (row,) = (cells for name, cells in rows.items() if name.startswith(figure))
        measured, floor, budget, verdict = row
        assert NUMBER.search(measured), (figure, row)
        assert NUMBER.search(budget), (figure, row)
        assert verdict in ("PASS", "FAIL"), (figure, row)
        if figure != "daemon start to listening":  # the issue gives it no floor
            assert NUMBER.search(floor), (figure, row)

    results = json.loads(results_path.read_text())
    assert results["headline"] == {"workload": "small", "backend": "sqlite"}
    once = results["once"]
    assert {name: run["returncode"] for name, run in once["runs"].items()} == {
        "changes": 0,
        "table": 0,
    }
    assert once["runs"]["changes"]["cpu_s"] > 0 and once["interpreter_start_cpu_s"] > 0
    assert results["scrape"]["start_to_listening_s"] > 0
    polls = results["workers"]["small/sqlite"]["polls"]
    kinds = [(p["phase"], p["kind"]) for p in polls]
    assert kinds[0] == ("small", "initial")
    assert ("small", "unchanged") in kinds
    assert ("small-churn", "churn") in kinds
    for poll in polls:
        assert poll["outcome"] == "ok"
        assert poll["cpu_s"] > 0 and poll["floor_cpu_s"] > 0 and poll["peak_mib"] > 0
        assert poll["floor_write_cpu_s"] >= 0
        # The stdlib floor (of once) is measured on every unchanged poll, and only there.
        assert (poll["floor_stdlib_cpu_s"] is not None) == (poll["kind"] == "unchanged")
        # 2 chains x 2 spenders x 1 batch of 10 wallets, plus USD prices when not cached.
        assert poll["requests"] >= 4
        assert set(poll["responses_by_status"]) == {"200"}
        if poll["kind"] == "unchanged":
            assert poll["versions_written"] == poll["floor_changes"] == 0
            assert poll["rows_beyond_poll_record"] == 0
        if poll["kind"] == "churn":
            # The floor decodes the very bytes the monitor received: same changes found.
            assert poll["versions_written"] == poll["floor_changes"] > 0
            assert poll["rows_written"] > poll["floor_rows"]


DISCOVERY_FIGURES = (
    "first scan: eth_getLogs requests",
    "first scan: wall time",
    "steady poll: eth_call",
    "steady poll: CPU",
    "peak RSS",
    "429 answers",
)


def discovery_rows(stdout: str) -> dict[str, list[str]]:
    """The discovery summary's rows by figure: [measured, floor, budget, verdict]."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Summary: discovery"))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 4 :]:  # title, blank, header, rule
        if not line.startswith("| "):
            break
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


def test_discovery_workload_finds_every_approval_and_reports_its_figures(tmp_path: Path) -> None:
    results_path = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--workload",
            "discovery-small",
            "--json",
            str(results_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = discovery_rows(proc.stdout)
    assert list(rows) == list(DISCOVERY_FIGURES)
    for figure, (measured, floor, budget, verdict) in rows.items():
        assert NUMBER.search(measured), (figure, measured)
        assert NUMBER.search(floor), (figure, floor)
        assert NUMBER.search(budget), (figure, budget)
        assert verdict in ("PASS", "FAIL"), (figure, verdict)

    results = json.loads(results_path.read_text())
    workload = results["workload"]
    first, *steady = results["worker"]["polls"]
    assert steady and all(p["kind"] == "steady" for p in steady)
    # The first scan found every approval of the generated world, and every pair reads.
    for poll in (first, *steady):
        assert poll["pairs"] == workload["pairs"] == 80
        assert poll["unreadable"] == 0 and poll["last_error"] is None
        assert poll["allowances"] == workload["pairs"]
        assert set(poll["responses_by_status"]) == {"200"}
    assert first["scanned_to"] + 1 >= workload["history_blocks"] - 12
    assert first["calls"]["eth_getLogs"] >= 6  # 3,000 blocks in ranges of at most 500
    assert first["scan_wall_s"] > 0
    for poll in steady:
        # Nothing new: no log, no timestamp; every pair read again in aggregates.
        assert "eth_getBlockByNumber" not in poll["calls"]
        assert poll["calls"]["eth_call"] >= 1
        assert poll["floor_values"] >= workload["pairs"] + workload["holdings"]
        assert poll["floor_changes"] == 0
    assert results["simulator"]["responses_by_status"].get("429", 0) == 0
