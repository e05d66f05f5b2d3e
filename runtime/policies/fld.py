"""FLD eviction (farthest layer distance first): the evictable resident whose layer comes latest in the sweep.

    make_eviction("fld", num_layers=16)

At current layer l, a resident of layer j is next needed (j - l) mod L layers ahead in the sweep 0 -> L-1 ->
next pass, so layers are tried in the order l-1, l-2, ..., l+1, l; inside a layer the least recently used
goes first. Per layer an OrderedDict keeps residents by recency (runtime/policies/layer_recency.py), so `victim`
is O(L) + skips. Without `num_layers` the policy uses the highest layer it has seen plus one.
"""

from __future__ import annotations

from collections.abc import Collection, Container
from itertools import filterfalse, islice

from runtime.policies.layer_recency import LayerRecencyEviction
from specmd_predict.routing import ExpertKey


class FLD(LayerRecencyEviction):
    name = "fld"
    batched = True  # a group's keys only move themselves, inside their own layer

    def _touch(self, key: ExpertKey) -> None:
        self._by_layer[key[0]].move_to_end(key)

    on_access = _touch
    on_prefetch = _touch

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        num_layers, layer = len(self._by_layer), self._layer
        for i in range(num_layers):
            for key in self._by_layer[(layer - 1 - i) % num_layers]:
                if key in candidates:
                    return key
        raise ValueError("FLD: no candidate is a resident it knows")

    def _victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        # each layer's books walked in C (oldest first, the group's own keys skipped): the layer just behind the
        # clock usually holds all `count`
        chosen: list[ExpertKey] = []
        outside = excluded.__contains__
        by_layer = self._by_layer
        num_layers, layer = len(by_layer), self._layer
        for i in range(num_layers):
            chosen.extend(islice(filterfalse(outside, by_layer[(layer - 1 - i) % num_layers]), count - len(chosen)))
            if len(chosen) == count:
                return chosen
        return chosen
