"""When CPython's cyclic garbage collector works, and on what: at the end of a poll, on what
the poll made.

CPython starts a full collection of the heap whenever the objects that survived into its
oldest generation have grown by a quarter since the last one. A poll that builds a new state
of hundreds of thousands of positions grows the heap by far more than that, so it used to
trigger a dozen full collections, each traversing every object the daemon holds (0.1-0.5 s
each at 306,000 positions), each stopping the event loop and every thread: ``/metrics``
waited through all of them, and they cost the poll seconds of CPU while collecting almost
nothing (the state is acyclic; what cycles there are come from connections and tasks).

While ``deferred_full_collections`` is installed:

- CPython's own collections of the oldest generation wait for about a thousand times the
  usual allocation (a safety net: a process that never reaches a poll boundary still
  collects its cycles). The young generations are collected as before, so short-lived cycles
  still go at once.
- ``settle``, once the stored state is loaded, collects and then *freezes* what survived
  (``gc.freeze``): the collector no longer traverses it.
- ``at_poll_boundary``, which the poll cycle calls as it ends, freezes what the poll left
  when the objects allocated since the last freeze could have grown the heap by that quarter
  (CPython's own rule, estimated from its generation counters). Freezing moves lists, it
  traverses nothing: the boundary no longer stops the loop. A collection there, over the
  poll's new objects only, used to: at the first poll after a restart (306,000 positions
  built, 315,000 new objects) it took 72-90 ms to find 334 unreachable objects, and a scrape
  arriving then waited for all of it.
- A frozen object that becomes garbage is still freed at once by its reference count, and
  the young generations are collected as ever, so a cycle that dies young still goes at
  once. Only a cycle that lived through young collections and is then frozen waits: at a
  boundary that is due and at least ``COMPLETE_EVERY_S`` after the last complete
  collection, everything is unfrozen, collected and frozen again. Such garbage (a few
  hundred connection and task objects per due boundary) waits for the first due boundary an
  hour or more after the last complete collection. A boundary comes due once the
  allocations since the last one reach a quarter of the heap (``MIN_OBJECTS`` at least),
  however small each poll is.

Process-wide, like the collector itself: the commands that poll (``run``, ``once``) install
it for their whole life. Not installed, ``settle`` and ``at_poll_boundary`` do nothing.

Both also hand the memory that C's allocator holds free back to the system
(``release_free_memory``: glibc's ``malloc_trim``). A poll's transient objects larger than
CPython's small-object limit (dict and list tables, long strings, answer bodies) are freed to
glibc's heap, and freed pages below the last live block stay resident until trimmed: after
the first poll of 306,000 positions (the benchmark's worker, which runs the poll cycle) that
was 37 of 455 MiB resident, for 5 ms of CPU (1 ms at an unchanged poll).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "DeferredCollections",
    "at_poll_boundary",
    "deferred_full_collections",
    "release_free_memory",
    "settle",
]

log = logging.getLogger(__name__)

SAFETY_NET_GEN1_COLLECTIONS = 1000
"""CPython's third threshold while installed: a full collection may start on its own only
after this many collections of the middle generation (CPython's default is 10)."""

GROWTH = 0.25
"""The growth of the heap, as a share of what it held after the last collection, that makes
one due: the share CPython uses."""

MIN_OBJECTS = 100_000
"""Below this many new objects no collection is due, however small the heap: they are
cheap, but there is no point making one after every poll of a small portfolio."""

COMPLETE_EVERY_S = 3600.0
"""A due collection at least this long after the last complete one is complete (frozen
objects included), which frees any cycle among frozen objects."""


@dataclass(slots=True)
class DeferredCollections:
    """The installed schedule: what the last collection left, and what it cost."""

    heap_objects: int
    """Objects the collector tracks, frozen ones included, after the last collection (or at
    install)."""
    saved_thresholds: tuple[int, int, int]
    clock: Callable[[], float] = time.monotonic
    last_complete: float = 0.0
    freezes: int = 0
    """Times what survived was frozen: at due boundaries (after a complete collection or
    not) and by ``settle``."""
    complete_collections: int = 0
    counted_at_freeze: int = 0
    """CPython's count of middle-generation collections at the last freeze (a freeze does not
    reset it; a collection of the oldest generation does)."""

    def __post_init__(self) -> None:
        self.last_complete = self.clock()

    def allocated_estimate(self) -> int:
        """At most how many objects reached the oldest generation since the last freeze: each
        collection of the middle generation moves up to what ``threshold0 * (threshold1 +
        1)`` net allocations left."""
        threshold0, threshold1, _ = gc.get_threshold()
        counted = gc.get_count()[2]
        since = counted - self.counted_at_freeze if counted >= self.counted_at_freeze else counted
        return since * threshold0 * (threshold1 + 1)

    def due(self) -> bool:
        return self.allocated_estimate() >= max(MIN_OBJECTS, int(self.heap_objects * GROWTH))

    def freeze(self) -> float:
        """Freeze every object the collector tracks, traversing none. Returns the pause."""
        started = time.perf_counter()
        gc.freeze()
        pause_s = time.perf_counter() - started
        self._frozen()
        return pause_s

    def collect(self) -> float:
        """A complete collection: unfreeze everything, so that cycles among frozen objects are
        found too, collect, and freeze what survived. Returns the pause in seconds."""
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        pause_s = time.perf_counter() - started
        self._frozen()
        self.complete_collections += 1
        self.last_complete = self.clock()
        return pause_s

    def _frozen(self) -> None:
        self.heap_objects = gc.get_freeze_count()
        self.counted_at_freeze = gc.get_count()[2]
        self.freezes += 1


_installed: DeferredCollections | None = None


@contextlib.contextmanager
def deferred_full_collections(
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[DeferredCollections]:
    """The schedule while the block runs; CPython's thresholds as they were, and nothing
    frozen, afterwards. One schedule per process: inside another block, the outer one's."""
    global _installed  # the collector is process-wide; so is its schedule
    if _installed is not None:
        yield _installed
        return
    saved = gc.get_threshold()
    schedule = DeferredCollections(
        heap_objects=len(gc.get_objects()) + gc.get_freeze_count(),
        saved_thresholds=saved,
        clock=clock,
    )
    gc.set_threshold(saved[0], saved[1], SAFETY_NET_GEN1_COLLECTIONS)
    _installed = schedule
    try:
        yield schedule
    finally:
        _installed = None
        gc.unfreeze()  # back to the oldest generation, where CPython's collections see them
        gc.set_threshold(*saved)


def settle() -> float | None:
    """The state just loaded is long-lived: collect, and freeze what survived, so that the
    collections at poll boundaries do not traverse it. Complete (frozen objects included).
    Returns the pause in seconds, or None when no schedule is installed."""
    schedule = _installed
    if schedule is None:
        return None
    pause_s = schedule.collect()
    release_free_memory()
    log.debug(
        "collection after loading the state: %.0f ms, %d objects frozen",
        pause_s * 1000,
        schedule.heap_objects,
    )
    return pause_s


def at_poll_boundary() -> float | None:
    """When due (see the module's docstring), freeze what the poll left, or make the hourly
    complete collection; then release free memory. Returns the collection's pause in seconds,
    or None when none was made (not due, or no schedule installed)."""
    schedule = _installed
    if schedule is None:
        return None
    pause_s = None
    if schedule.due():
        complete = schedule.clock() - schedule.last_complete >= COMPLETE_EVERY_S
        pause_s = schedule.collect() if complete else schedule.freeze()
        log.debug(
            "%s at the poll boundary: %.0f ms, %d objects frozen",
            "complete garbage collection" if complete else "freeze",
            pause_s * 1000,
            schedule.heap_objects,
        )
    release_free_memory()  # after the collection, which may have freed more
    return pause_s


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is not glibc (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The process's own symbols, the C library's among them (no search for its file).
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the pages C's allocator holds free to the system. True when something was
    released; False when nothing was, or the C library cannot (not glibc)."""
    trim = _malloc_trim()
    # ctypes releases the GIL during the call, so other threads go on meanwhile; the caller
    # (the event loop, at a poll boundary) waits for it: 0.4-1.4 ms in a large daemon.
    return trim is not None and bool(trim(0))
