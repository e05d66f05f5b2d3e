"""LFU eviction: the evictable resident with the fewest demand uses since it was inserted goes first.

    make_eviction("lfu")

Counts restart at insertion (in-cache LFU); a prefetched insert starts at one use, like a demand miss, so a
prefetch is not the first victim by construction. Ties go to the least recently used: the victim is the
smallest (uses, tick of last use).

Cost (why the structure looks like this): a use only bumps two dict entries; the heap of (uses, tick, key) is
updated lazily. Uses and ticks only grow while a key is resident, so a key's newest heap entry is a lower bound
of its current (uses, tick): `victim` pops entries until the top one is current (an outdated top is pushed
again with its current value, an entry older than the key's newest is dropped). That is O(log n) per victim
and per use that reaches the top, instead of a heap push per use.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Container, Sequence

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class LFU(EvictionPolicy):
    name = "lfu"
    batched = True  # a group's keys only change their own counts

    def __init__(self) -> None:
        self._count: dict[ExpertKey, int] = {}  # residents: uses since insertion
        self._last: dict[ExpertKey, int] = {}  # residents: tick of the last use (or of the insertion)
        self._pushed: dict[ExpertKey, int] = {}  # residents: tick of their newest heap entry
        self._heap: list[tuple[int, int, ExpertKey]] = []  # (uses, tick, key), lazy
        self._tick = 0

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._tick += 1
        count = self._count[key] = 1 if prefetched else 0  # a demand insert gets its use from on_access
        self._last[key] = self._pushed[key] = self._tick
        heapq.heappush(self._heap, (count, self._tick, key))
        if len(self._heap) > 4 * len(self._last) + 64:  # drop outdated entries now and then
            self._heap = [(self._count[k], t, k) for k, t in self._last.items()]
            heapq.heapify(self._heap)
            self._pushed.update(self._last)

    def on_access(self, key: ExpertKey) -> None:
        self._count[key] += 1
        self._tick += 1
        self._last[key] = self._tick

    def on_evict(self, key: ExpertKey) -> None:
        del self._count[key]
        del self._last[key]
        del self._pushed[key]

    def _top(self, excluded: Container[ExpertKey], skipped: list) -> ExpertKey | None:
        """The current smallest key not in `excluded` (left in the heap), moving excluded ones to `skipped`."""
        heap, count, last, pushed = self._heap, self._count, self._last, self._pushed
        while heap:
            uses, tick, key = heap[0]
            if pushed.get(key) != tick:
                heapq.heappop(heap)  # an older entry of a resident, or of an evicted key
                continue
            now_uses, now_tick = count[key], last[key]
            if now_tick != tick or now_uses != uses:
                pushed[key] = now_tick
                heapq.heapreplace(heap, (now_uses, now_tick, key))  # outdated: back in at its current place
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
            raise ValueError("LFU: no candidate is a resident it knows")
        return key  # its entry stays on top: valid until on_evict removes the key

    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        # _top inlined (the simulator's hot path); the chosen keys' entries are not put back: the cache evicts them
        heap, uses_of, last, pushed = self._heap, self._count, self._last, self._pushed
        heappop = heapq.heappop
        chosen: list[ExpertKey] = []
        skipped: list = []
        while heap:
            uses, tick, key = heap[0]
            if pushed.get(key) != tick:
                heappop(heap)  # an older entry of a resident, or of an evicted key
                continue
            now_tick = last[key]
            if now_tick != tick:
                pushed[key] = now_tick
                heapq.heapreplace(heap, (uses_of[key], now_tick, key))
                continue
            entry = heappop(heap)
            if key in excluded:
                skipped.append(entry)
                continue
            chosen.append(key)
            if len(chosen) == count:
                break
        for entry in skipped:
            heapq.heappush(heap, entry)
        return chosen

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        uses_of, last, pushed, heap = self._count, self._last, self._pushed, self._heap
        for key in victims:
            del uses_of[key], last[key], pushed[key]
        get = uses_of.get
        for key in keys:  # a miss restarts at 0 and gets its first use
            uses_of[key] = get(key, 0) + 1
        tick = self._tick
        last.update(zip(keys, range(tick + 1, tick + 1 + len(keys)), strict=True))
        self._tick = tick + len(keys)
        for key in misses:  # pushed at their value after this group's use: exact, never re-pushed for it
            tick = pushed[key] = last[key]
            heapq.heappush(heap, (1, tick, key))
        if len(heap) > 4 * len(last) + 64:
            self._heap = [(uses_of[k], t, k) for k, t in last.items()]
            heapq.heapify(self._heap)
            pushed.update(last)


class _Outside:
    """`key in _Outside(candidates)` iff key is not a candidate (victim() gets candidates, _top wants exclusions)."""

    __slots__ = ("candidates",)

    def __init__(self, candidates: Collection[ExpertKey]) -> None:
        self.candidates = candidates

    def __contains__(self, key: object) -> bool:
        return key not in self.candidates
