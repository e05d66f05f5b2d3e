"""LFU eviction: the evictable resident with the fewest demand uses since it was inserted goes first.

    make_eviction("lfu")

Counts restart at insertion (in-cache LFU); a prefetched insert starts at one use, like a demand miss, so a
prefetch is not the first victim by construction. Ties go to the least recently used: the victim is the
smallest (uses, tick of last use).

Cost: a use only bumps two dict entries; the heap of (uses, tick, key) is updated lazily (runtime/policies/
lazy_heap.py): uses and ticks only grow while a key is resident, so a key's newest heap entry is a lower bound
of its current (uses, tick).
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.policies.lazy_heap import LazyHeapEviction
from specmd_predict.routing import ExpertKey


class LFU(LazyHeapEviction):
    name = "lfu"
    batched = True  # a group's keys only change their own counts

    def __init__(self) -> None:
        self._count: dict[ExpertKey, int] = {}  # residents: uses since insertion
        super().__init__(values=self._count)

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._count[key] = 1 if prefetched else 0  # a demand insert gets its use from on_access
        self._push(key)

    def on_access(self, key: ExpertKey) -> None:
        self._count[key] += 1
        self._touch(key)

    def on_evict(self, key: ExpertKey) -> None:
        super().on_evict(key)
        del self._count[key]

    def _use_group(self, keys: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        uses_of = self._count
        for key in victims:
            del uses_of[key]
        get = uses_of.get
        for key in keys:  # a miss restarts at 0 and gets its first use
            uses_of[key] = get(key, 0) + 1
