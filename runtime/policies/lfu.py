"""LFU eviction: the evictable resident with the fewest demand uses since it was inserted goes first.

    make_eviction("lfu")

Counts restart at insertion (in-cache LFU); a prefetched insert starts at one use, like a demand miss, so a
prefetch is not the first victim by construction. Ties go to the least recently used.
"""

from __future__ import annotations

from collections.abc import Collection

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class LFU(EvictionPolicy):
    name = "lfu"

    def __init__(self) -> None:
        self._count: dict[ExpertKey, int] = {}
        self._last: dict[ExpertKey, int] = {}
        self._tick = 0

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._tick += 1
        self._count[key] = 1 if prefetched else 0  # a demand insert gets its use from the on_access that follows
        self._last[key] = self._tick

    def on_access(self, key: ExpertKey) -> None:
        self._tick += 1
        self._count[key] += 1
        self._last[key] = self._tick

    def on_evict(self, key: ExpertKey) -> None:
        del self._count[key]
        del self._last[key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        count, last = self._count, self._last
        return min(candidates, key=lambda k: (count[k], last[k]))
