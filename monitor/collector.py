"""When CPython's cyclic garbage collector makes its full collections: at the end of a poll.

CPython starts a full collection of the heap whenever the objects that survived into its
oldest generation have grown by a quarter since the last one. A poll that builds a new state
of hundreds of thousands of positions grows the heap by far more than that, so it used to
trigger a dozen full collections, each traversing every object the daemon holds (0.1-0.5 s
each at 306,000 positions), each stopping the event loop and every thread: ``/metrics``
waited through all of them, and they cost the poll seconds of CPU while collecting almost
nothing (the state is acyclic; what cycles there are come from connections and tasks).

``deferred_full_collections`` moves them to the one place where the heap has stopped
growing: ``at_poll_boundary``, which the poll cycle calls as it ends, makes one full
collection when the objects allocated since the last one could have grown the heap by the
same quarter (CPython's own rule, estimated from its generation counters). The young
generations are collected as before, so short-lived cycles still go at once. As a safety
net, CPython's own full collections still happen, after about a thousand times the usual
allocation: a process that never reaches a poll boundary still collects its cycles.

Process-wide, like the collector itself: the commands that poll (``run``, ``once``) install
it for their whole life. Not installed, ``at_poll_boundary`` does nothing.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["DeferredCollections", "at_poll_boundary", "deferred_full_collections"]

log = logging.getLogger(__name__)

SAFETY_NET_GEN1_COLLECTIONS = 1000
"""CPython's third threshold while installed: a full collection may start on its own only
after this many collections of the middle generation (CPython's default is 10)."""

GROWTH = 0.25
"""The growth of the heap, as a share of what survived the last full collection, that makes
one due: the share CPython uses."""

MIN_OBJECTS = 100_000
"""Below this many new objects no full collection is due, however small the heap: they are
cheap, but there is no point making one after every poll of a small portfolio."""


@dataclass(slots=True)
class DeferredCollections:
    """The installed schedule: what the last full collection left, and what it cost."""

    heap_objects: int
    """Objects the collector tracked after the last full collection (or at install)."""
    saved_thresholds: tuple[int, int, int]
    collections: int = 0
    """Full collections made at a poll boundary."""
    last_pause_s: float = 0.0

    def allocated_estimate(self) -> int:
        """At most how many objects reached the oldest generation since its last collection:
        each collection of the middle generation moves up to what ``threshold0 *
        (threshold1 + 1)`` net allocations left."""
        threshold0, threshold1, _ = gc.get_threshold()
        return gc.get_count()[2] * threshold0 * (threshold1 + 1)

    def due(self) -> bool:
        return self.allocated_estimate() >= max(MIN_OBJECTS, int(self.heap_objects * GROWTH))

    def collect(self) -> float:
        """One full collection now; returns its pause in seconds."""
        started = time.perf_counter()
        gc.collect()
        pause_s = time.perf_counter() - started
        # Everything that survived is in the oldest generation now.
        self.heap_objects = len(gc.get_objects(generation=2))
        self.collections += 1
        self.last_pause_s = pause_s
        return pause_s


_installed: DeferredCollections | None = None


@contextlib.contextmanager
def deferred_full_collections() -> Iterator[DeferredCollections]:
    """Full collections at poll boundaries while the block runs; CPython's thresholds as they
    were afterwards. One schedule per process: inside another block, the outer one's."""
    global _installed  # the collector is process-wide; so is its schedule
    if _installed is not None:
        yield _installed
        return
    saved = gc.get_threshold()
    schedule = DeferredCollections(heap_objects=len(gc.get_objects()), saved_thresholds=saved)
    gc.set_threshold(saved[0], saved[1], SAFETY_NET_GEN1_COLLECTIONS)
    _installed = schedule
    try:
        yield schedule
    finally:
        _installed = None
        gc.set_threshold(*saved)


def at_poll_boundary() -> float | None:
    """A full collection if one is due (see the module's docstring). Returns its pause in
    seconds, or None when none was made (not due, or no schedule installed)."""
    schedule = _installed
    if schedule is None or not schedule.due():
        return None
    pause_s = schedule.collect()
    log.debug(
        "full garbage collection at the poll boundary: %.0f ms, %d objects remain",
        pause_s * 1000,
        schedule.heap_objects,
    )
    return pause_s
