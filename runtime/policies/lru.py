"""LRU eviction: the least recently used (demanded, prefetched or inserted) evictable resident goes first.

    make_eviction("lru")

An OrderedDict keeps residents oldest first; `victim` walks from the oldest and returns the first evictable
one (pinned and in-flight residents are the recent ones, so this is O(1) in practice).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from runtime.policies.fifo import FIFO
from specmd_predict.routing import ExpertKey


class LRU(FIFO):
    """FIFO's insertion-ordered books (insert, evict, victim); a hit or a prefetch moves a resident to the back."""

    name = "lru"
    batched = True  # FIFO's victims(); a group's keys move to the back in request order, as one by one

    def __init__(self) -> None:
        self._order: OrderedDict[ExpertKey, None] = OrderedDict()
        # bound once: these are the per-request hot path
        self.on_access = self._order.move_to_end  # type: ignore[method-assign]
        self.on_prefetch = self._order.move_to_end  # type: ignore[method-assign]

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        order = self._order
        for key in victims:
            del order[key]
        for key in misses:
            order[key] = None
        move_to_end = order.move_to_end
        for key in keys:  # hits and misses interleaved by id, as they were requested
            move_to_end(key)
