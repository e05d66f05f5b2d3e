"""LRU eviction: the least recently used (demanded, prefetched or inserted) evictable resident goes first.

    make_eviction("lru")

An OrderedDict keeps residents oldest first; `victim` walks from the oldest and returns the first evictable
one (pinned and in-flight residents are the recent ones, so this is O(1) in practice).
"""

from __future__ import annotations

from collections import OrderedDict

from runtime.policies.fifo import FIFO
from specmd_predict.routing import ExpertKey


class LRU(FIFO):
    """FIFO's insertion-ordered books (insert, evict, victim); a hit or a prefetch moves a resident to the back."""

    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[ExpertKey, None] = OrderedDict()
        # bound once: these are the per-request hot path
        self.on_access = self._order.move_to_end  # type: ignore[method-assign]
        self.on_prefetch = self._order.move_to_end  # type: ignore[method-assign]
