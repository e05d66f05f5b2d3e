"""The per-layer recency books that FLD (runtime/policies/fld.py) and Least-Stale (runtime/policies/least_stale.py)
share: per MoE layer an OrderedDict of its residents, least recently used first, so a policy that offers victims
layer by layer in some sweep order finds each layer's oldest resident at its front.

    class MySweep(LayerRecencyEviction):
        batched = True                              # declared by each policy class itself (runtime/expert_cache.py)
        def victim(self, candidates): ...           # walk self._by_layer in the policy's layer order
        def _victims(self, count, excluded): ...    # the same, `count` keys at once (the batched path)

Without `num_layers` the books grow to the highest layer seen plus one.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Collection, Container, Sequence

from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class LayerRecencyEviction(EvictionPolicy):
    """Base of the layer-sweep evictions: the current layer and each layer's residents by recency."""

    def __init__(self, num_layers: int | None = None) -> None:
        self._layer = 0
        self._by_layer: list[OrderedDict[ExpertKey, None]] = [OrderedDict() for _ in range(num_layers or 0)]

    def on_layer_start(self, layer: int) -> None:
        self._layer = layer

    def _residents(self, layer: int) -> OrderedDict[ExpertKey, None]:
        """`layer`'s residents, adding the books of the layers up to it that are new."""
        while layer >= len(self._by_layer):
            self._by_layer.append(OrderedDict())
        return self._by_layer[layer]

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        layer = key[0]  # the per-request path: no call where the layer's books exist
        residents = self._by_layer[layer] if layer < len(self._by_layer) else self._residents(layer)
        residents[key] = None

    def on_evict(self, key: ExpertKey) -> None:
        del self._by_layer[key[0]][key]

    @abstractmethod
    def _victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        """Up to `count` victims not in `excluded`, in the order `victim` would pick them one by one."""

    def victims(self, count: int, excluded: Collection[ExpertKey]) -> list[ExpertKey]:
        if count > 1 and self._layer >= len(self._by_layer):
            # the group's layer is new to the books: one by one, its first miss's insert would add it (and so
            # change the layer order) before the second victim is chosen
            first = self._victims(1, excluded)
            self._residents(self._layer)
            return first + self._victims(count - 1, set(excluded).union(first))
        return self._victims(count, excluded)

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        by_layer = self._by_layer
        for key in victims:
            del by_layer[key[0]][key]
        residents = self._residents(keys[0][0])  # a group is one layer's
        for key in misses:
            residents[key] = None
        move_to_end = residents.move_to_end
        for key in keys:
            move_to_end(key)
