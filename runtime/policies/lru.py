"""LRU eviction: the least recently used (demanded, prefetched or inserted) evictable resident goes first.

    make_eviction("lru")

FIFO's order (runtime/policies/fifo.py: `IdList`, an intrusive list over the cache's key ids, oldest first) with every
use moving the id to the back; `victim` walks from the oldest and returns the first evictable one (pinned and
in-flight residents are the recent ones, so this is O(1) in practice).
"""

from __future__ import annotations

from runtime.policies.fifo import FIFO


class LRU(FIFO):
    """FIFO's books (insert, evict, victim, the id path); a hit or a prefetch moves a resident to the back."""

    name = "lru"
    batched = True  # FIFO's victims(); a group's keys move to the back in request order, as one by one
    batched_ids = True
    move_on_use = True

    def __init__(self) -> None:
        super().__init__()
        # bound once: these are the per-request hot path (one call, one id lookup)
        self.on_access = self._order.move_to_end  # type: ignore[method-assign]
        self.on_prefetch = self._order.move_to_end  # type: ignore[method-assign]
