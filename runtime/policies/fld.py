"""FLD eviction (farthest layer distance first): the evictable resident whose layer comes latest in the sweep.

    make_eviction("fld", num_layers=16)

At current layer l, a resident of layer j is next needed (j - l) mod L layers ahead in the sweep 0 -> L-1 ->
next pass; the largest distance goes first, ties to the least recently used. Without `num_layers` the policy
uses the highest layer it has seen plus one.
"""

from __future__ import annotations

from collections.abc import Collection

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class FLD(EvictionPolicy):
    name = "fld"

    def __init__(self, num_layers: int | None = None) -> None:
        self.num_layers = num_layers
        self._seen_layers = 0
        self._layer = 0
        self._last: dict[ExpertKey, int] = {}
        self._tick = 0

    def on_layer_start(self, layer: int) -> None:
        self._layer = layer
        self._seen_layers = max(self._seen_layers, layer + 1)

    def _touch(self, key: ExpertKey) -> None:
        self._tick += 1
        self._last[key] = self._tick

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        self._seen_layers = max(self._seen_layers, key.layer + 1)
        self._touch(key)

    on_access = _touch
    on_prefetch = _touch

    def on_evict(self, key: ExpertKey) -> None:
        del self._last[key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        num_layers = self.num_layers or self._seen_layers
        layer, last = self._layer, self._last
        return max(candidates, key=lambda k: ((k[0] - layer) % num_layers, -last[k]))
