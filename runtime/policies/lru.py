"""LRU eviction: the least recently used (demanded, prefetched or inserted) evictable resident goes first.

    make_eviction("lru")

An OrderedDict keeps residents oldest first; `victim` walks from the oldest and returns the first evictable
one (pinned and in-flight residents are the recent ones, so this is O(1) in practice).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class LRU(EvictionPolicy):
    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[ExpertKey, None] = OrderedDict()
        # bound once: these are the per-request hot path
        self.on_access = self._order.move_to_end  # type: ignore[method-assign]
        self.on_prefetch = self._order.move_to_end  # type: ignore[method-assign]

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._order[key] = None

    def on_evict(self, key: ExpertKey) -> None:
        del self._order[key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        for key in self._order:
            if key in candidates:
                return key
        raise ValueError("LRU: no candidate is a resident it knows")
