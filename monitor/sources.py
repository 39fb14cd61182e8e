"""Several ``PositionSource``s polled as one: 1inch's Balance API and the chain reader.

Each source's batches join one ``PollResult``; the snapshot takes them together, so a key
both sources cover is read from both (``BatchOutcome.source`` tells them apart). Where the
``prefer``red source (the chain's live read) read a key, its value is the one kept, a zero
included; what the sources read differently is in ``PollResult.disagreements``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

from monitor.domain.model import BatchOutcome, PollResult
from monitor.domain.records import prefer_source, source_disagreements
from monitor.ports import Clock, PositionSource, utc_now


class CombinedPositions:
    """Polls every source at once; the result holds every source's batches, in source
    order. Never raises for upstream failures, as no source does."""

    def __init__(
        self,
        sources: Sequence[PositionSource],
        *,
        clock: Clock = utc_now,
        prefer: str | None = None,
    ) -> None:
        if not sources:
            raise ValueError("CombinedPositions needs at least one source")
        self._sources = tuple(sources)
        self._clock = clock
        self._prefer = prefer

    @property
    def sources(self) -> tuple[PositionSource, ...]:
        return self._sources

    async def poll(
        self,
        *,
        on_start: Callable[[int], None] | None = None,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> PollResult:
        if len(self._sources) == 1:
            return await self._sources[0].poll(on_start=on_start, on_batch=on_batch)
        started_at = self._clock()
        totals: list[int] = []

        def started(count: int) -> None:
            totals.append(count)
            if on_start is not None and len(totals) == len(self._sources):
                on_start(sum(totals))

        results = await asyncio.gather(
            *(source.poll(on_start=started, on_batch=on_batch) for source in self._sources)
        )
        combined = PollResult(
            started_at=started_at,
            finished_at=self._clock(),
            batches=tuple(batch for result in results for batch in result.batches),
        )
        # A walk over every position: off the loop, which keeps serving scrapes meanwhile.
        return await asyncio.to_thread(_reconcile, combined, self._prefer)


def _reconcile(result: PollResult, prefer: str | None) -> PollResult:
    disagreements = source_disagreements(result)
    if prefer is not None:
        result = prefer_source(result, prefer)
    return replace(result, disagreements=disagreements)
