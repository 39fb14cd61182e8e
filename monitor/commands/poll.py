"""``once``: poll everything once, record it, print the positions and what changed."""

from __future__ import annotations

from typing import TextIO

from monitor.config import ApiKey, Config
from monitor.domain.addresses import to_checksum
from monitor.poller import poll_once
from monitor.render import write_events, write_json_lines, write_table
from monitor.runtime import open_client, open_store
from monitor.store.snapshots import StoredEvent


async def poll_and_record(
    config: Config,
    api_key: ApiKey | None,
    *,
    fmt: str,
    changes_only: bool,
    out: TextIO,
    err: TextIO,
) -> bool:
    """Poll, store the poll, print. Returns False when any batch failed upstream."""
    async with open_store(config) as store:
        async with open_client(config, api_key) as client:
            result = await poll_once(client, config)
        recorded = await store.record_poll(result)
        tokens = {(p.chain_id, p.token.address): p.token for p in result.positions}
        tokens.update(await store.tokens())
    events = [
        StoredEvent(poll_id=recorded.poll_id, observed_at=recorded.observed_at, event=e)
        for e in recorded.events
    ]
    if changes_only:
        write_events(events, out, tokens, fmt=fmt, config=config)
    elif fmt == "json":
        write_json_lines(result.positions, out, config)
    else:
        write_table(result.positions, out, config)
        out.write(f"\nchanges recorded by poll {recorded.poll_id} ({recorded.outcome}):\n")
        if events:
            write_events(events, out, tokens, fmt="table", config=config)
        else:
            out.write("none\n")
    for failure in result.failures:
        err.write(
            f"exposure-monitor: chain {failure.chain_id} spender {to_checksum(failure.spender)} "
            f"({len(failure.wallets)} wallets) not polled: {failure.error}\n"
        )
    return not result.failures
