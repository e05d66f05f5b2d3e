"""LFU eviction: the evictable resident with the fewest demand uses since it was inserted goes first.

    make_eviction("lfu")

Counts restart at insertion (in-cache LFU); a prefetched insert starts at one use, like a demand miss, so a
prefetch is not the first victim by construction. Ties go to the least recently used: the victim is the
smallest (uses, tick of last use).

Cost: the ranks live in the shared indexed heap over key ids (runtime/policies/id_heap.py): a use only raises an id's
count and tick (it moves down when it reaches the top), an insert or an eviction is one sift, O(log n).
"""

from __future__ import annotations

from runtime.policies.id_heap import HeapEviction
from specmd_predict.routing import ExpertKey


class LFU(HeapEviction):
    name = "lfu"
    batched = True  # a group's keys only change their own counts
    batched_ids = True

    def __init__(self) -> None:
        super().__init__(add=1.0, reset=True)  # a group's use: +1 each, its misses restart at 0 first

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        n = self._ids[key]
        self._heap.rerank(n, 1.0 if prefetched else 0.0)  # a demand insert gets its use from on_access
        self._heap.insert(n)

    def on_access(self, key: ExpertKey) -> None:
        self._heap.add(self._ids[key], 1.0)
