"""Garbage collections deferred to the end of a poll (``monitor.collector``): none in the
middle of a large allocation; at the boundary, when due, what the poll left is frozen without
a collection; a complete collection within the hour; CPython's thresholds restored."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator

import pytest

from monitor import collector
from monitor.collector import (
    COMPLETE_EVERY_S,
    MIN_OBJECTS,
    SAFETY_NET_GEN1_COLLECTIONS,
    at_poll_boundary,
    deferred_full_collections,
    settle,
)
from tests.test_poll_cycle import Rig, config


@pytest.fixture
def full_collections() -> Iterator[list[float]]:
    """The start times of every full collection CPython makes while the test runs."""
    seen: list[float] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            seen.append(time.perf_counter())

    gc.callbacks.append(callback)
    try:
        yield seen
    finally:
        gc.callbacks.remove(callback)


def _grow_heap(schedule_heap: int) -> list[list[int]]:
    """More live, tracked objects than a quarter of the heap (and than ``MIN_OBJECTS``): what
    makes CPython start a full collection on its own, and one due at the boundary."""
    return [[i] for i in range(2 * max(MIN_OBJECTS, schedule_heap // 4))]


def test_thresholds_are_raised_inside_and_restored_after() -> None:
    before = gc.get_threshold()
    with deferred_full_collections() as schedule:
        assert gc.get_threshold() == (before[0], before[1], SAFETY_NET_GEN1_COLLECTIONS)
        assert schedule.saved_thresholds == before
        with deferred_full_collections() as inner:  # one schedule per process
            assert inner is schedule
        assert gc.get_threshold()[2] == SAFETY_NET_GEN1_COLLECTIONS
        assert settle() is not None
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0  # nothing is left frozen


def test_without_a_schedule_the_boundary_does_nothing(full_collections: list[float]) -> None:
    grown = _grow_heap(len(gc.get_objects()))
    full_collections.clear()
    assert at_poll_boundary() is None
    assert settle() is None
    assert full_collections == []
    assert gc.get_freeze_count() == 0
    del grown


def test_a_large_allocation_is_frozen_at_the_boundary_without_a_collection(
    full_collections: list[float],
) -> None:
    # Without the schedule, CPython collects the whole heap in the middle of such growth.
    gc.collect()
    baseline = _grow_heap(len(gc.get_objects()))
    assert full_collections, "CPython made no full collection of its own: the test proves nothing"
    del baseline

    with deferred_full_collections() as schedule:
        settle()
        assert at_poll_boundary() is None  # nothing allocated since: not due
        full_collections.clear()
        grown = _grow_heap(schedule.heap_objects)
        assert full_collections == []  # none in the middle
        assert schedule.due()
        pause_s = at_poll_boundary()
        assert pause_s is not None and pause_s >= 0
        assert full_collections == []  # nor at the boundary: a freeze traverses nothing
        assert schedule.heap_objects >= len(grown)  # what survived is the new baseline
        assert at_poll_boundary() is None  # and the next boundary is not due again
        grown_more = _grow_heap(schedule.heap_objects)
        assert schedule.due()  # counted from the freeze, not from the last collection
        assert at_poll_boundary() is not None
        assert full_collections == []
        del grown, grown_more


def test_a_small_poll_makes_none(full_collections: list[float]) -> None:
    with deferred_full_collections():
        settle()
        full_collections.clear()
        kept = [[i] for i in range(MIN_OBJECTS // 4)]
        assert at_poll_boundary() is None
        assert full_collections == []
        del kept


class Node:
    """An object that can sit in a reference cycle and be watched through a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


def test_cycles_among_frozen_objects_are_collected_within_the_hour() -> None:
    now = [0.0]
    with deferred_full_collections(clock=lambda: now[0]) as schedule:
        a, b = Node(), Node()
        a.other, b.other = b, a
        watch = weakref.ref(a)
        settle()  # the cycle is alive, and now frozen
        del a, b  # garbage from here on, but only a collection can tell
        grown = _grow_heap(schedule.heap_objects)
        assert at_poll_boundary() is not None  # due: freezes what the poll made...
        assert watch() is not None  # ...and the frozen cycle stays
        assert schedule.complete_collections == 1  # settle's
        del grown
        now[0] = COMPLETE_EVERY_S
        grown = _grow_heap(schedule.heap_objects)
        assert at_poll_boundary() is not None
        assert schedule.complete_collections == 2
        assert watch() is None  # an hour on, the complete collection found it
        del grown


def test_what_a_due_boundary_leaves_is_frozen_and_no_longer_traversed() -> None:
    with deferred_full_collections() as schedule:
        settle()
        frozen = gc.get_freeze_count()
        grown = _grow_heap(schedule.heap_objects)
        assert at_poll_boundary() is not None
        # What survived is frozen too: no later collection traverses it.
        assert gc.get_freeze_count() >= frozen + len(grown)
        assert len(gc.get_objects()) < len(grown)  # the generations CPython traverses
        del grown


def test_a_cycle_that_dies_after_a_poll_is_collected_within_the_hour() -> None:
    """The price of freezing without collecting: a cycle the poll made and left for dead
    is frozen with the rest, and waits for the complete collection."""
    now = [0.0]
    with deferred_full_collections(clock=lambda: now[0]) as schedule:
        settle()
        a, b = Node(), Node()
        a.other, b.other = b, a
        watch = weakref.ref(a)
        grown = _grow_heap(schedule.heap_objects)
        gc.collect(1)  # the young generations: the cycle is alive, so it moves on
        del a, b
        assert at_poll_boundary() is not None
        assert watch() is not None  # frozen, not collected
        del grown
        now[0] = COMPLETE_EVERY_S
        grown = _grow_heap(schedule.heap_objects)
        assert at_poll_boundary() is not None
        assert watch() is None
        del grown


async def test_the_poll_cycle_ends_at_the_boundary_and_times_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def boundary() -> float:
        calls.append("boundary")
        time.sleep(0.05)  # a pause the cycle's duration must include
        return 0.05

    monkeypatch.setattr(collector, "at_poll_boundary", boundary)
    rig = Rig(config())
    await rig.cycle()
    await rig.cycle()
    assert calls == ["boundary", "boundary"]
    total = rig.registry.get_sample_value("exposure_monitor_poll_duration_seconds_sum")
    assert total is not None and total >= 0.1


_FREED_BUT_RESIDENT = """
import sys
from monitor import collector

def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

# 200 MiB in blocks above CPython's small-object limit and below glibc's mmap threshold:
# they come from glibc's heap. All but the last are freed; the last keeps the heap's top
# where it is, so glibc cannot shrink the heap on its own.
blocks = [bytes(4000) for _ in range(50_000)]
last = blocks.pop()
before = rss_mib()
del blocks
freed = rss_mib()
released = collector.release_free_memory()
print(before, freed, rss_mib(), released)
"""


@pytest.mark.skipif(collector._malloc_trim() is None, reason="C library is not glibc")
def test_memory_freed_to_glibc_is_given_back_to_the_system() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FREED_BUT_RESIDENT], capture_output=True, text=True, check=True
    )
    before, freed, after, released = done.stdout.split()
    assert float(freed) > float(before) - 50  # freed, yet still resident
    assert released == "True"
    assert float(after) < float(freed) - 150  # of 200 MiB freed, most given back


@pytest.mark.parametrize("due", [False, True])
def test_the_boundary_releases_free_memory_after_any_collection(
    monkeypatch: pytest.MonkeyPatch, due: bool
) -> None:
    frozen_at_release: list[int] = []

    def release() -> bool:
        frozen_at_release.append(gc.get_freeze_count())
        return True

    monkeypatch.setattr(collector, "release_free_memory", release)
    with deferred_full_collections():
        grown = _grow_heap(len(gc.get_objects())) if due else []
        pause = at_poll_boundary()
        assert (pause is not None) is due
        frozen = gc.get_freeze_count()
        del grown
    assert len(frozen_at_release) == 1  # every boundary, due or not
    if due:
        assert frozen_at_release == [frozen] and frozen > 0  # after the freeze


def test_settling_releases_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[bool] = []
    monkeypatch.setattr(collector, "release_free_memory", lambda: released.append(True))
    assert settle() is None and released == []  # no schedule: nothing at all
    with deferred_full_collections():
        assert settle() is not None
    assert released == [True]
