"""FIFO eviction: the evictable resident inserted first goes first; hits do not reorder.

make_eviction("fifo")
"""

from __future__ import annotations

from collections.abc import Collection

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class FIFO(EvictionPolicy):
    name = "fifo"

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
