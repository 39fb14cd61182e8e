"""``once``: poll everything once, record it exactly as the daemon does, print the positions.

Recording goes through ``Monitor.poll_and_record``, the daemon's own path: the poll is stored, the
risk rules are evaluated over the new snapshot and the findings are recorded, so that
``findings`` after ``once`` answers as it would after ``run``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Never, TextIO

from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.config import ApiKey, Config
from monitor.daemon.metrics import Instruments
from monitor.daemon.poll_cycle import RecordedCycle, make_monitor
from monitor.domain.addresses import to_checksum
from monitor.domain.model import BatchOutcome, PollResult, Token
from monitor.domain.records import StoredEvent
from monitor.errors import StoreError
from monitor.ports import utc_now
from monitor.render import write_events, write_json_lines, write_table
from monitor.runtime import open_client, open_store


async def poll_and_record(
    config: Config,
    api_key: ApiKey | None,
    *,
    fmt: str,
    changes_only: bool,
    out: TextIO,
    err: TextIO,
) -> bool:
    """Poll, record the poll and its findings, print. Returns False when any batch failed
    upstream; raises ``StoreError`` when the poll or its findings could not be recorded."""
    async with open_store(config) as store, open_client(config, api_key) as client:
        monitor = make_monitor(
            config,
            api_key,
            client=client,
            store=store,
            instruments=Instruments(CollectorRegistry(auto_describe=True), version=__version__),
            clock=utc_now,
            serve_view=False,
        )
        await monitor.load_context()
        with _progress(err) as (on_start, on_batch):
            cycle = await monitor.poll_and_record(on_start=on_start, on_batch=on_batch)
        result = cycle.result
        tokens = {(p.chain_id, p.token.address): p.token for p in result.positions}
        tokens.update(await store.tokens())
        scanning = [s for s in monitor.discovery_status() if s.scanning]
    _print(cycle, config, tokens, fmt=fmt, changes_only=changes_only, out=out)
    _report_failures(result, err)
    for status in scanning:
        # Approvals in blocks not scanned yet are unknown: never let "none" pass for "none".
        err.write(
            f"exposure-monitor: discovery on chain {status.chain_id} has scanned up to block "
            f"{status.scanned_to} of {status.head_block}: approvals made after it are not "
            "known yet (the next poll goes on from there)\n"
        )
    if not cycle.findings_recorded:
        raise StoreError("the poll was recorded but its findings were not (see the log)")
    return not result.failures


def _print(
    cycle: RecordedCycle,
    config: Config,
    tokens: Mapping[tuple[int, str], Token],
    *,
    fmt: str,
    changes_only: bool,
    out: TextIO,
) -> None:
    result, recorded = cycle.result, cycle.recorded
    events = [
        StoredEvent(poll_id=recorded.poll_id, observed_at=recorded.observed_at, event=e)
        for e in recorded.events
    ]
    answered = _answered(result)
    if changes_only:
        write_events(events, out, tokens, fmt=fmt, config=config)
        if fmt != "json" and not events:
            out.write(_nothing_changed(result, answered))
        return
    if fmt == "json":
        write_json_lines(result.positions, out, config)
        return
    if answered == 0:
        # Nothing answered: the positions are unknown, which is not "nothing held".
        out.write(f"poll {recorded.poll_id} failed: no batch answered, positions unknown\n")
        return
    if result.failures:
        out.write(
            f"partial poll: {len(result.failures)} of {len(result.batches)} batches failed; "
            "the positions of their wallets are unknown and not shown\n"
        )
    if result.positions or not result.failures:
        write_table(result.positions, out, config)
    out.write(f"\nchanges recorded by poll {recorded.poll_id} ({recorded.outcome}):\n")
    if events:
        write_events(events, out, tokens, fmt="table", config=config)
    else:
        out.write("none\n")
    findings = cycle.open_findings
    out.write(
        f"\n{findings} open finding{'s' if findings != 1 else ''} "
        "(`exposure-monitor findings` lists them)\n"
    )


def _report_failures(result: PollResult, err: TextIO) -> None:
    """One line per failed batch; batches that failed alike (an unreachable host: same error
    but for the endpoint's name) share one line instead of repeating it."""
    by_problem: dict[str, list[BatchOutcome]] = {}
    for failure in result.failures:
        problem = (failure.error or "").split(": ", 1)[-1]
        by_problem.setdefault(problem, []).append(failure)
    for problem, failures in by_problem.items():
        if len(failures) > 1:
            err.write(f"exposure-monitor: {len(failures)} batches not polled: {problem}\n")
            continue
        failure = failures[0]
        what = f"spender {to_checksum(failure.spender)}" if failure.spender else "discovery"
        err.write(
            f"exposure-monitor: chain {failure.chain_id} {what} "
            f"({len(failure.wallets)} wallets) not polled: {failure.error}\n"
        )


def _answered(result: PollResult) -> int:
    return sum(1 for batch in result.batches if batch.ok)


def _nothing_changed(result: PollResult, answered: int) -> str:
    if answered == 0:
        return "no batch answered: changes unknown\n"
    if result.failures:
        return "no changes in the batches that answered (others failed: unknown)\n"
    return "no changes\n"


@contextlib.contextmanager
def _progress(
    err: TextIO,
) -> Iterator[tuple[Callable[[int], None], Callable[[BatchOutcome], None]]]:
    """A progress bar on ``err`` (batches done of total, rate, ETA) when it is a terminal;
    silent otherwise, so logs and pipes get no control characters."""
    if not err.isatty():
        yield (lambda _total: None), (lambda _batch: None)
        return
    from tqdm import tqdm  # only a terminal needs it

    bars: list[tqdm[Never]] = []

    def on_start(total: int) -> None:
        bars.append(
            tqdm(
                total=total, unit="batch", desc="polling", file=err, leave=False, dynamic_ncols=True
            )
        )

    def on_batch(_batch: BatchOutcome) -> None:
        bars[-1].update(1)

    try:
        yield on_start, on_batch
    finally:
        for bar in bars:
            bar.close()
