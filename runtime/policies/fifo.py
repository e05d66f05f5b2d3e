"""FIFO eviction: the evictable resident inserted first goes first; hits do not reorder.

make_eviction("fifo")
"""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence
from itertools import filterfalse, islice

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class FIFO(EvictionPolicy):
    name = "fifo"
    batched = True  # a group's own keys only move themselves in the order

    def __init__(self) -> None:
        self._order: dict[ExpertKey, None] = {}  # dicts keep insertion order

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._order[key] = None

    def on_evict(self, key: ExpertKey) -> None:
        del self._order[key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        for key in self._order:
            if key in candidates:
                return key
        raise ValueError(f"{self.name.upper()}: no candidate is a resident it knows")

    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        # the first `count` of the order outside `excluded`: what `count` victim() calls would take one by one
        return list(islice(filterfalse(excluded.__contains__, self._order), count))

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        order = self._order
        for key in victims:
            del order[key]
        order.update(dict.fromkeys(misses))
