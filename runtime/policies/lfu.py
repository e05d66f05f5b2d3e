"""LFU eviction: the evictable resident with the fewest demand uses since it was inserted goes first.

    make_eviction("lfu")

Counts restart at insertion (in-cache LFU); a prefetched insert starts at one use, like a demand miss, so a
prefetch is not the first victim by construction. Ties go to the least recently used: the victim is the
smallest (uses, tick of last use).

Cost: a use only bumps two list entries (by key id); the heap of (uses, tick, id) is updated lazily
(runtime/policies/lazy_heap.py): uses and ticks only grow while a key is resident, so a key's newest heap entry is a
lower bound of its current (uses, tick).
"""

from __future__ import annotations

import cython

from runtime.policies.lazy_heap import LazyHeapEviction
from specmd_predict.routing import ExpertKey


class LFU(LazyHeapEviction):
    name = "lfu"
    batched = True  # a group's keys only change their own counts
    batched_ids = True

    def __init__(self) -> None:
        super().__init__(fill=0)  # id -> uses since insertion

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        n = self._ids[key]
        self._values[n] = 1 if prefetched else 0  # a demand insert gets its use from on_access
        self._push(n)

    def on_access(self, key: ExpertKey) -> None:
        n = self._ids[key]
        self._values[n] += 1
        self._touch(n)

    @cython.locals(n=cython.Py_ssize_t)
    def _use_group(self, ids: list, misses: list) -> None:
        uses = self._values
        for n in misses:  # a miss restarts at 0 and gets its first use below
            uses[n] = 0
        for n in ids:
            uses[n] += 1
