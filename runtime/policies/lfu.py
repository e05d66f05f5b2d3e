"""LFU eviction: the evictable resident with the fewest demand uses since it was inserted goes first.

    make_eviction("lfu")

Counts restart at insertion (in-cache LFU); a prefetched insert starts at one use, like a demand miss, so a
prefetch is not the first victim by construction. Ties go to the least recently used. A heap of
(count, last use, key) with lazy invalidation keeps `victim` at O(log n) instead of a scan.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class LFU(EvictionPolicy):
    name = "lfu"

    def __init__(self) -> None:
        self._count: dict[ExpertKey, int] = {}
        self._last: dict[ExpertKey, int] = {}  # tick of the last use: an entry is valid iff it carries it
        self._heap: list[tuple[int, int, ExpertKey]] = []
        self._tick = 0

    def _push(self, key: ExpertKey) -> None:
        self._tick += 1
        self._last[key] = self._tick
        heapq.heappush(self._heap, (self._count[key], self._tick, key))
        if len(self._heap) > 4 * len(self._last) + 64:  # drop stale entries now and then
            self._heap = [(self._count[k], t, k) for k, t in self._last.items()]
            heapq.heapify(self._heap)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._count[key] = 1 if prefetched else 0  # a demand insert gets its use from the on_access that follows
        self._push(key)

    def on_access(self, key: ExpertKey) -> None:
        self._count[key] += 1
        self._push(key)

    def on_evict(self, key: ExpertKey) -> None:
        del self._count[key]
        del self._last[key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        heap, last = self._heap, self._last
        skipped = []
        try:
            while heap:
                entry = heapq.heappop(heap)
                key = entry[2]
                if last.get(key) != entry[1]:
                    continue  # outdated entry
                if key in candidates:
                    heapq.heappush(heap, entry)  # stays valid until on_evict removes the key
                    return key
                skipped.append(entry)
            raise ValueError("LFU: no candidate is a resident it knows")
        finally:
            for entry in skipped:
                heapq.heappush(heap, entry)
