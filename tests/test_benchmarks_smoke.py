"""The benchmark suite's small workload through its entry point, ``python -m benchmarks``.

A smoke test: it proves the suite still runs against the current code (simulator and worker
processes, the in-process ``Monitor``, the floors, the storage probes, the report) and that
its figures are consistent. It asserts nothing about time or memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


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
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in ("CPU seconds per poll", "Rows and bytes written", "Peak resident memory"):
        assert heading in proc.stdout
    assert "budgets met" in proc.stdout

    results = json.loads(results_path.read_text())
    polls = results["workers"]["small/sqlite"]["polls"]
    kinds = [(p["phase"], p["kind"]) for p in polls]
    assert kinds[0] == ("small", "initial")
    assert ("small", "unchanged") in kinds
    assert ("small-churn", "churn") in kinds
    for poll in polls:
        assert poll["outcome"] == "ok"
        assert poll["cpu_s"] > 0 and poll["floor_cpu_s"] > 0 and poll["peak_mib"] > 0
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
