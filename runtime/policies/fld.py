"""FLD eviction (farthest layer distance first): the evictable resident whose layer comes latest in the sweep.

    make_eviction("fld", num_layers=16)

At current layer l, a resident of layer j is next needed (j - l) mod L layers ahead in the sweep 0 -> L-1 ->
next pass, so layers are tried in the order l-1, l-2, ..., l+1, l; inside a layer the least recently used
goes first. Per layer an OrderedDict keeps residents by recency, so `victim` is O(L) + skips. Without
`num_layers` the policy uses the highest layer it has seen plus one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Container, Sequence

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class FLD(EvictionPolicy):
    name = "fld"
    batched = True  # a group's keys only move themselves, inside their own layer

    def __init__(self, num_layers: int | None = None) -> None:
        self._layer = 0
        self._by_layer: list[OrderedDict[ExpertKey, None]] = [OrderedDict() for _ in range(num_layers or 0)]

    def on_layer_start(self, layer: int) -> None:
        self._layer = layer

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        while key[0] >= len(self._by_layer):
            self._by_layer.append(OrderedDict())
        self._by_layer[key[0]][key] = None

    def _touch(self, key: ExpertKey) -> None:
        self._by_layer[key[0]].move_to_end(key)

    on_access = _touch
    on_prefetch = _touch

    def on_evict(self, key: ExpertKey) -> None:
        del self._by_layer[key[0]][key]

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        num_layers, layer = len(self._by_layer), self._layer
        for i in range(num_layers):
            for key in self._by_layer[(layer - 1 - i) % num_layers]:
                if key in candidates:
                    return key
        raise ValueError("FLD: no candidate is a resident it knows")

    def victims(self, count: int, excluded: Collection[ExpertKey]) -> list[ExpertKey]:
        if count > 1 and self._layer >= len(self._by_layer):
            # the group's layer is new to the books: one by one, its first miss's insert would add it (and so
            # change the layer order) before the second victim is chosen
            first = self._victims(1, excluded)
            while self._layer >= len(self._by_layer):
                self._by_layer.append(OrderedDict())
            return first + self._victims(count - 1, set(excluded).union(first))
        return self._victims(count, excluded)

    def _victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        chosen: list[ExpertKey] = []
        num_layers, layer = len(self._by_layer), self._layer
        for i in range(num_layers):
            for key in self._by_layer[(layer - 1 - i) % num_layers]:
                if key not in excluded:
                    chosen.append(key)
                    if len(chosen) == count:
                        return chosen
        return chosen

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        by_layer = self._by_layer
        for key in victims:
            del by_layer[key[0]][key]
        layer = keys[0][0]  # a group is one layer's
        while layer >= len(by_layer):
            by_layer.append(OrderedDict())
        residents = by_layer[layer]
        for key in misses:
            residents[key] = None
        move_to_end = residents.move_to_end
        for key in keys:
            move_to_end(key)
