"""The lazy min-heap that LFU (runtime/policies/lfu.py) and score-based (runtime/policies/score.py) eviction share:
the victim is the evictable resident with the smallest (value, tick of its last change).

    class MyEviction(LazyHeapEviction):
        def __init__(self):
            super().__init__(values={})          # key -> value; every resident has one before it is pushed
        def on_insert(self, key, prefetched):
            self._values[key] = 0; self._push(key)
        def on_access(self, key):
            self._values[key] += 1; self._touch(key)     # a value that only grows: just a new tick
        def _use_group(self, keys): ...                  # each key's value after one demand use (on_group)

Cost (why the structure looks like this): a change only updates two dict entries (`_touch`); the heap of
(value, tick, key) is updated lazily. A subclass lets a resident's value only grow between pushes (a value that
drops must be `_push`ed at once), and ticks only grow, so a resident's newest heap entry is a lower bound of its
current (value, tick): `victim` pops entries until the top one is current (an outdated top is pushed again at
its current value, an entry older than the key's newest is dropped). That is O(log n) per victim and per change
that reaches the top, instead of a heap push per change.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Container, Sequence

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class LazyHeapEviction(EvictionPolicy):
    """Base of the value-ranked evictions; subclasses keep `_values` and call `_push` / `_touch` (module doc).
    Each subclass declares `batched = True` itself: the cache takes the batched path (`victims`, `on_group`) only
    for a class that declares it (runtime/expert_cache.py), so a subclass that changes a hook opts in knowingly."""

    def __init__(self, values: dict) -> None:
        self._values = values  # key -> current value (the subclass's: uses, score, ...)
        self._version: dict[ExpertKey, int] = {}  # residents: tick of the last change of their value
        self._pushed: dict[ExpertKey, int] = {}  # residents: tick of their newest heap entry
        self._heap: list[tuple] = []  # (value, tick, key), lazy
        self._tick = 0

    def _push(self, key: ExpertKey) -> None:
        """Put `key` in the heap at its current value now (an insertion, or a value that dropped)."""
        self._tick += 1
        self._version[key] = self._pushed[key] = self._tick
        heapq.heappush(self._heap, (self._values[key], self._tick, key))
        self._compact()

    def _touch(self, key: ExpertKey) -> None:
        """`key`'s value grew: a new tick, its heap entry is fixed when it reaches the top."""
        self._tick += 1
        self._version[key] = self._tick

    def _compact(self) -> None:
        if len(self._heap) > 4 * len(self._version) + 64:  # drop outdated entries now and then
            values = self._values
            self._heap = [(values[k], t, k) for k, t in self._version.items()]
            heapq.heapify(self._heap)
            self._pushed.update(self._version)

    def on_evict(self, key: ExpertKey) -> None:
        del self._version[key]
        del self._pushed[key]

    def _top(self, excluded: Container[ExpertKey], skipped: list) -> ExpertKey | None:
        """The current smallest key not in `excluded` (left in the heap), moving excluded ones to `skipped`."""
        heap, values, version, pushed = self._heap, self._values, self._version, self._pushed
        while heap:
            _, tick, key = heap[0]
            if pushed.get(key) != tick:
                heapq.heappop(heap)  # an older entry of a resident, or of an evicted key
                continue
            now_tick = version[key]
            if now_tick != tick:
                pushed[key] = now_tick
                heapq.heapreplace(heap, (values[key], now_tick, key))  # outdated: back in at its current place
                continue
            if key in excluded:
                skipped.append(heapq.heappop(heap))
                continue
            return key
        return None

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        skipped: list = []
        try:
            key = self._top(_Outside(candidates), skipped)
        finally:
            for entry in skipped:
                heapq.heappush(self._heap, entry)
        if key is None:
            raise ValueError(f"{self.name}: no candidate is a resident it knows")
        return key  # its entry stays on top: valid until on_evict removes the key

    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        # _top inlined (the simulator's hot path); the chosen keys' entries are not put back: the cache evicts them
        heap, values, version, pushed = self._heap, self._values, self._version, self._pushed
        heappop = heapq.heappop
        chosen: list[ExpertKey] = []
        skipped: list = []
        remaining = count
        while heap:
            _, tick, key = heap[0]
            if pushed.get(key) != tick:
                heappop(heap)  # an older entry of a resident, or of an evicted key
                continue
            now_tick = version[key]
            if now_tick != tick:
                pushed[key] = now_tick
                heapq.heapreplace(heap, (values[key], now_tick, key))
                continue
            entry = heappop(heap)
            if key in excluded:
                skipped.append(entry)
                continue
            chosen.append(key)
            remaining -= 1
            if not remaining:
                break
        for entry in skipped:
            heapq.heappush(heap, entry)
        return chosen

    def _use_group(self, keys: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        """Each of `keys`' values after one demand use; `victims` have just left the cache (on_group)."""
        raise NotImplementedError

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        version, pushed = self._version, self._pushed
        for key in victims:
            del version[key], pushed[key]
        self._use_group(keys, victims)
        tick = self._tick
        version.update(zip(keys, range(tick + 1, tick + 1 + len(keys)), strict=True))
        self._tick = tick + len(keys)
        values, heap = self._values, self._heap
        heappush = heapq.heappush
        for key in misses:  # pushed at their value after this group's use: exact, never re-pushed for it
            tick = pushed[key] = version[key]
            heappush(heap, (values[key], tick, key))
        self._compact()


class _Outside:
    """`key in _Outside(candidates)` iff key is not a candidate (victim() gets candidates, _top wants exclusions)."""

    __slots__ = ("candidates",)

    def __init__(self, candidates: Collection[ExpertKey]) -> None:
        self.candidates = candidates

    def __contains__(self, key: object) -> bool:
        return key not in self.candidates
