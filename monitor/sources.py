"""Several ``PositionSource``s polled as one: 1inch's Balance API and the chain reader.

Each source's batches join one ``PollResult``; the snapshot takes them together, so a key
both sources cover is read from both (``BatchOutcome.source`` tells them apart).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from monitor.domain.model import BatchOutcome, PollResult
from monitor.ports import Clock, PositionSource, utc_now


class CombinedPositions:
    """Polls every source at once; the result holds every source's batches, in source
    order. Never raises for upstream failures, as no source does."""

    def __init__(self, sources: Sequence[PositionSource], *, clock: Clock = utc_now) -> None:
        if not sources:
            raise ValueError("CombinedPositions needs at least one source")
        self._sources = tuple(sources)
        self._clock = clock

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
        return PollResult(
            started_at=started_at,
            finished_at=self._clock(),
            batches=tuple(batch for result in results for batch in result.batches),
        )
