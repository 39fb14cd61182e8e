"""The results: issue 12's summary table, then the detailed tables, each figure beside its
floor, and the budgets, PASS or FAIL."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks import summary
from benchmarks.scrape import RESTORING, percentile

CPU_RATIO_BUDGET = 2.0
MEMORY_BUDGET_MB = 300.0
SCRAPE_P99_BUDGET_MS = 100.0
WALL_SLACK = 0.05
STEADY = ("unchanged", "churn")
KIND_LABEL = {
    "initial": "first poll",
    "unchanged": "unchanged",
    "churn": "churn",
}
MIB = 2**20 / 10**6  # MiB -> MB
UNLIMITED_RATE = 10_000


def describe(machine: dict[str, Any], code: dict[str, Any]) -> list[str]:
    memory = machine.get("memory_gib")
    lines = [
        f"machine: {machine['cpu']}, {machine['cores']} cores, "
        f"{memory:.0f} GiB RAM, {machine['os']}, temp on {machine['temp_filesystem']}"
        if memory
        else f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}",
        f"load average at start: {machine['load_at_start']} (1, 5, 15 min)",
        f"software: Python {machine['python']}, SQLite {machine['sqlite']}"
        + (f", {machine['postgresql']}" if machine.get("postgresql") else "")
        + f"; floor JSON parser: {machine['json_floor_parser']}",
        f"code: commit {code['commit']}"
        + (
            f" + {code['uncommitted_files']} uncommitted file(s) under monitor/, migrations/"
            if code["uncommitted_files"]
            else ""
        )
        + f"; measured {code['measured_at']}",
    ]
    return lines


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], left: int = 3) -> list[str]:
    """A Markdown table; the first ``left`` columns are text, the others numbers."""
    rows = [list(r) for r in rows]
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            out.append(cell.ljust(width) if i < left else cell.rjust(width))
        return "| " + " | ".join(out) + " |"

    return [
        line(header),
        "|"
        + "|".join(
            ("-" * (w + 2)) if i < left else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
        )
        + "|",
        *(line(r) for r in rows),
    ]


def _groups(worker: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(phase, kind, polls) in the order they ran."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for poll in worker["polls"]:
        groups.setdefault((poll["phase"], poll["kind"]), []).append(poll)
    return [(phase, kind, polls) for (phase, kind), polls in groups.items()]


def _median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


class Budgets:
    def __init__(self) -> None:
        self.lines: list[tuple[bool, str]] = []

    def add(self, ok: bool, text: str) -> str:
        self.lines.append((ok, text))
        return _verdict(ok)


def _cpu_section(workers: dict[str, Any], budgets: Budgets) -> list[str]:
    rows = []
    for worker in workers.values():
        backend = worker["backend"]
        for phase, kind, polls in _groups(worker):
            cpu = _median(p["cpu_s"] for p in polls)
            floor = _median(p["floor_cpu_s"] for p in polls)
            ratio = cpu / floor if floor > 0 else float("inf")
            parts = {
                name: _median((p["parts_cpu_s"].get(name) or 0.0) for p in polls)
                for name in ("fetch_parse", "record_poll", "risk", "sync_findings", "publish")
            }
            gcs = [p["gc"] for p in polls if p.get("gc")]
            gc_text = (
                f"{_s(_median(g['total_s'] for g in gcs))} / "
                f"{_median(g['max_ms'] for g in gcs):.0f}"
                if gcs
                else "-"
            )
            verdict = "-"
            if kind in STEADY:
                verdict = budgets.add(
                    ratio <= CPU_RATIO_BUDGET,
                    f"{phase}/{backend}: {kind} poll CPU {_s(cpu)} s = {ratio:.1f}x its floor "
                    f"{_s(floor)} s (budget <= {CPU_RATIO_BUDGET:g}x)",
                )
            rows.append(
                [
                    phase,
                    backend,
                    KIND_LABEL.get(kind, kind),
                    str(len(polls)),
                    _s(cpu),
                    _s(floor),
                    f"{ratio:.1f}x",
                    " / ".join(_s(parts[n]) for n in parts),
                    gc_text,
                    verdict,
                ]
            )
    return [
        "CPU seconds per poll (median; the monitor process: poll_once, record_poll, risk, "
        "findings, view and metrics text)",
        "",
        *_table(
            [
                "workload",
                "backend",
                "poll",
                "n",
                "CPU s",
                "floor s",
                "ratio",
                "fetch+parse / record / risk / findings / publish",
                "GC s / max pause ms",
                "<= 2x floor",
            ],
            rows,
        ),
    ]


def _writes_section(workers: dict[str, Any], budgets: Budgets) -> list[str]:
    rows = []
    for worker in workers.values():
        backend = worker["backend"]
        for phase, kind, polls in _groups(worker):
            written = _median(p["rows_written"] for p in polls)
            beyond = max(p["rows_beyond_poll_record"] for p in polls)
            on_disk = statistics.mean(p["bytes_on_disk"] for p in polls)
            payloads = [p["payload_bytes"] for p in polls if p["payload_bytes"] is not None]
            payload = statistics.mean(payloads) if payloads else None
            floor_rows = _median(p["floor_rows"] for p in polls)
            floor_disk = statistics.mean(p["floor_bytes_on_disk"] for p in polls)
            floor_payloads = [
                p["floor_payload_bytes"] for p in polls if p["floor_payload_bytes"] is not None
            ]
            floor_payload = statistics.mean(floor_payloads) if floor_payloads else None
            record_rows = _median(
                sum(
                    verbs.get("insert", 0)
                    for table, verbs in p["rows_by_table"].items()
                    if table in ("polls", "poll_scopes")
                )
                for p in polls
            )
            verdict = "-"
            if kind == "unchanged":
                verdict = budgets.add(
                    beyond == 0,
                    f"{phase}/{backend}: {kind} poll writes {written:.0f} rows, "
                    f"{beyond} beyond its poll record (budget: only the poll record)",
                )
                floor_text = f"{record_rows:.0f} (poll record)"
                floor_bytes = "-"
            else:
                floor_text = f"{floor_rows:,.0f}"
                floor_bytes = f"{_bytes(floor_disk)} / {_bytes(floor_payload)}"
            by_table = _median_by_table(polls)
            rows.append(
                [
                    phase,
                    backend,
                    KIND_LABEL.get(kind, kind),
                    f"{written:,.0f}",
                    by_table,
                    f"{_bytes(on_disk)} / {_bytes(payload)}",
                    floor_text,
                    floor_bytes,
                    verdict,
                ]
            )
    return [
        "Rows and bytes written per poll (rows: median; bytes: mean growth on disk / payload; "
        "floor for changes: one bare executemany of the changed values)",
        "",
        *_table(
            [
                "workload",
                "backend",
                "poll",
                "rows",
                "rows by table",
                "bytes disk / payload",
                "floor rows",
                "floor disk / payload",
                "only poll record",
            ],
            rows,
        ),
    ]


_SHORT = {
    "polls": "poll",
    "poll_scopes": "scope",
    "allowance_versions": "allow",
    "balance_versions": "bal",
    "change_events": "event",
    "findings": "find",
    "tokens": "token",
}


def _median_by_table(polls: list[dict[str, Any]]) -> str:
    keys: dict[tuple[str, str], list[int]] = {}
    for poll in polls:
        for table, verbs in poll["rows_by_table"].items():
            for verb, rows in verbs.items():
                keys.setdefault((table, verb), []).append(rows)
    parts = []
    for (table, verb), values in keys.items():
        value = _median(values + [0] * (len(polls) - len(values)))
        if value:
            mark = {"insert": "", "update": " upd", "delete": " del"}.get(verb, verb)
            parts.append(f"{_SHORT.get(table, table)}{mark} {value:,.0f}")
    return ", ".join(parts) or "0"


def _memory_section(workers: dict[str, Any], budgets: Budgets) -> list[str]:
    rows = []
    for worker in workers.values():
        backend = worker["backend"]
        floor = (worker["rss_at_start_mib"] + worker["floor_memory_mib"]) * MIB
        by_workload: dict[str, list[dict[str, Any]]] = {}
        for poll in worker["polls"]:
            by_workload.setdefault(poll["phase"], []).append(poll)
        for name, polls in by_workload.items():
            peak = max(p["peak_mib"] for p in polls) * MIB
            steady = [p["peak_mib"] for p in polls if p["kind"] in STEADY]
            steady_peak = max(steady) * MIB if steady else None
            verdict = "-"
            if name in ("large", "churn"):
                verdict = budgets.add(
                    peak < MEMORY_BUDGET_MB,
                    f"{name}/{backend}: peak resident memory {peak:.0f} MB "
                    f"(floor {floor:.0f} MB; budget < {MEMORY_BUDGET_MB:.0f} MB)",
                )
            rows.append(
                [
                    name,
                    backend,
                    ", ".join(dict.fromkeys(KIND_LABEL.get(p["kind"], p["kind"]) for p in polls)),
                    f"{peak:,.0f}",
                    f"{steady_peak:,.0f}" if steady_peak else "-",
                    f"{polls[-1]['rss_after_mib'] * MIB:,.0f}",
                    f"{worker['rss_at_start_mib'] * MIB:,.0f} + "
                    f"{worker['floor_memory_mib'] * MIB:,.0f} = {floor:,.0f}",
                    verdict,
                ]
            )
    return [
        "Peak resident memory, MB (VmHWM of the measuring process, reset before each poll; "
        "floor: the process at start, imports included, plus the previous and current state "
        "as plain dicts)",
        "",
        *_table(
            [
                "workload",
                "backend",
                "polls",
                "peak",
                "peak steady",
                "RSS after",
                "floor",
                "< 300 MB",
            ],
            rows,
        ),
    ]


def _scrape_section(result: dict[str, Any] | None, budgets: Budgets) -> list[str]:
    if result is None:
        return []
    latencies: dict[str, list[float]] = result["latencies_ms"]
    sizes: dict[str, list[int]] = result["bytes"]
    walls = {int(k): v for k, v in result["poll_wall_s"].items()}
    rows = []
    idle = latencies.get("idle")
    for state, values in sorted(
        latencies.items(), key=lambda kv: (kv[0] != RESTORING, kv[0] == "idle")
    ):
        p99 = percentile(values, 99)
        p50 = percentile(values, 50)
        verdict = "-"
        if state.startswith("poll"):
            verdict = budgets.add(
                p99 < SCRAPE_P99_BUDGET_MS,
                f"scrape/{result['backend']}: /metrics p99 {p99:.0f} ms during a large poll "
                f"(p50 {p50:.0f} ms; idle p50/p99 "
                + (f"{percentile(idle, 50):.0f}/{percentile(idle, 99):.0f} ms" if idle else "-")
                + f"; budget < {SCRAPE_P99_BUDGET_MS:.0f} ms)",
            )
        poll_no = int(state.split()[1]) if state.startswith("poll") else None
        rows.append(
            [
                f"during {state} (wall {walls[poll_no]:.1f} s)"
                if poll_no in walls
                else (
                    "idle, same data (floor)"
                    if state == "idle"
                    else "before poll 1 (restoring)"
                    if state == RESTORING
                    else f"during {state}"
                ),
                result["backend"],
                str(len(values)),
                f"{p50:.1f}",
                f"{p99:.1f}",
                f"{max(values):.1f}",
                _bytes(statistics.median(sizes[state])),
                verdict,
            ]
        )
    peak = result.get("peak_rss_mib")
    notes = [
        f"daemon start to listening (restoring {result.get('positions', 0):,} positions): "
        f"{result['start_to_listening_s']:.2f} s; its peak RSS "
        + (f"{peak * MIB:,.0f} MB" if peak else "-")
        + f"; API answers during the run: {result['responses_by_status']}"
    ]
    if result["failures"]:
        notes.append(f"{result['failures']} scrape(s) failed")
    if result["daemon_errors"]:
        notes.append("daemon errors: " + " | ".join(result["daemon_errors"]))
    return [
        f"/metrics scrape latency, ms (exposure-monitor run as a process on the large "
        f"portfolio's database, {result['rate_per_s']} requests/s; sequential scrapes, "
        f"timed to the last byte)",
        "",
        *_table(
            ["when", "backend", "scrapes", "p50", "p99", "max", "body", "p99 < 100 ms"],
            rows,
            left=2,
        ),
        *notes,
    ]


def _once_section(result: dict[str, Any] | None) -> list[str]:
    if result is None:
        return []
    labels = {
        "changes": "once --changes (prints what changed: nothing)",
        "table": "once (prints every position, to /dev/null)",
    }
    rows = [
        [
            labels.get(name, name),
            result["backend"],
            _s(run["cpu_s"]),
            _s(run["wall_s"]),
            str(run["returncode"]),
        ]
        for name, run in result["runs"].items()
    ]
    rows.append(
        ["python -c pass (interpreter start)", "-", _s(result["interpreter_start_cpu_s"]), "-", "0"]
    )
    notes = [
        f"{name}: {run['stderr_tail']}" for name, run in result["runs"].items() if run["returncode"]
    ]
    return [
        f"exposure-monitor once as a whole process on the unchanged {result['workload']} "
        f"portfolio ({result['rate_per_s']} requests/s; CPU = user + system of the process, "
        f"from RUSAGE_CHILDREN)",
        "",
        *_table(["command", "backend", "CPU s", "wall s", "exit"], rows, left=2),
        *notes,
    ]


def _api_section(workers: dict[str, Any], budgets: Budgets) -> list[str]:
    rows = []
    for worker in workers.values():
        backend = worker["backend"]
        for phase, kind, polls in _groups(worker):
            rate = polls[0]["rate_per_s"]
            if rate >= UNLIMITED_RATE:
                continue
            requests = _median(p["requests"] for p in polls)
            limited = sum(p["responses_by_status"].get("429", 0) for p in polls)
            bound = requests / rate
            fetch = _median((p["parts_wall_s"]["fetch_parse"] or 0.0) for p in polls)
            wall = _median(p["wall_s"] for p in polls)
            gaps = [p["request_start_gaps_ms"] for p in polls if p.get("request_start_gaps_ms")]
            gap_text = (
                f"{_median(g['mean'] for g in gaps):.1f} / {_median(g['p99'] for g in gaps):.1f}"
                if gaps
                else "-"
            )
            verdict = "-"
            if kind in STEADY:
                verdict = budgets.add(
                    wall <= bound * (1 + WALL_SLACK) and limited == 0,
                    f"{phase}/{backend}: {kind} poll wall {wall:.1f} s = {wall / bound:.2f}x "
                    f"requests/R = {bound:.1f} s ({requests:.0f} requests at {rate:g}/s; "
                    f"request phase {fetch:.1f} s = {fetch / bound:.2f}x), {limited} x 429 "
                    f"(budget <= {1 + WALL_SLACK:.2f}x, no 429)",
                )
            rows.append(
                [
                    phase,
                    backend,
                    KIND_LABEL.get(kind, kind),
                    str(len(polls)),
                    f"{rate:g}",
                    f"{requests:.0f}",
                    str(limited),
                    _s(bound),
                    f"{gap_text} ({1000 / rate:.0f})",
                    f"{_s(fetch)} ({fetch / bound:.2f}x)",
                    f"{_s(wall)} ({wall / bound:.2f}x)",
                    verdict,
                ]
            )
    if not rows:
        return []
    return [
        "API efficiency (the simulator enforces R requests/s; bound = requests / R; request "
        "phase = poll_once, the requests and their parsing; poll wall = the whole cycle)",
        "",
        *_table(
            [
                "workload",
                "backend",
                "poll",
                "n",
                "R",
                "requests",
                "429s",
                "bound s",
                "start gap ms mean / p99 (1/R)",
                "request phase s",
                "poll wall s",
                "<= 1.05x, no 429",
            ],
            rows,
        ),
    ]


def render(results: dict[str, Any]) -> tuple[list[str], bool]:
    budgets = Budgets()
    workers = results["workers"]
    lines = ["", "exposure-monitor benchmarks", *describe(results["machine"], results["code"])]
    for name, text in results["workloads"].items():
        lines.append(f"workload {name}: {text}")
    if results.get("profiled"):
        lines.append("PROFILED RUN: py-spy sampled the steady polls; timings are perturbed")
    summary_lines, summary_failed = _summary_section(results)
    lines += ["", *summary_lines]
    for section in (
        _cpu_section(workers, budgets),
        _writes_section(workers, budgets),
        _memory_section(workers, budgets),
        _scrape_section(results.get("scrape"), budgets),
        _once_section(results.get("once")),
        _api_section(workers, budgets),
    ):
        if section:
            lines += ["", *section]
    lines += ["", "Budgets"]
    for ok, text in budgets.lines:
        lines.append(f"  {_verdict(ok)}  {text}")
    failed = sum(1 for ok, _ in budgets.lines if not ok)
    lines.append(
        f"{len(budgets.lines) - failed} of {len(budgets.lines)} budgets met; "
        f"run took {results['elapsed_s'] / 60:.1f} min; load average at the end "
        f"{results.get('load_at_end')}"
    )
    return lines, failed > 0 or summary_failed


def _summary_section(results: dict[str, Any]) -> tuple[list[str], bool]:
    """Issue 12's table: every figure, its floor from this run, its budget, PASS or FAIL."""
    rows = summary.Summary(results).rows()
    checked = [row for row in rows if row.ok is not None]
    met = sum(1 for row in checked if row.ok)
    table = _table(
        ["figure", "measured", "floor (this run)", "budget", "verdict"],
        ([row.figure, row.measured, row.floor, row.budget, row.verdict] for row in rows),
        left=5,
    )
    lines = [
        summary.title(results),
        "",
        *table,
        f"{met} of {len(checked)} met"
        + (f"; {len(rows) - len(checked)} not measured by this run" if len(checked) < 8 else ""),
        *summary.FLOORS,
    ]
    return lines, met < len(checked)
