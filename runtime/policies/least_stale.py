"""Least-Stale eviction (SpecMD), in both readings of the paper's stale-queue order.

    make_eviction("least-stale-layer-order")              # stale victims earliest layer first (paper, literally)
    make_eviction("least-stale-reverse", num_layers=16)   # stale victims of the layer just behind first

Residents are *current* (used or prefetched in this pass) or *stale* (last used in an earlier pass). Victims
come from the stale ones first, current ones only when no stale one is evictable. At current layer l:
- layer order: layers 0, 1, ..., L-1;
- reverse: layers l-1, l-2, ..., 0, L-1, ..., l, i.e. the stale expert whose next request in the sweep is
  farthest (the layer just behind us is needed again only after a full sweep; ../shared/DESIGN.md section 4). The
  current layer comes last because its own experts may still be requested now.
The same layer order ranks the current residents; inside one layer the least recently used goes first.
Per layer an OrderedDict keeps residents by recency (runtime/policies/layer_recency.py), so stale ones sit at its
front: victim is O(L) + skips.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection, Container, Sequence

from runtime.policies.layer_recency import LayerRecencyEviction
from specmd_predict.routing import ExpertKey


class _LeastStale(LayerRecencyEviction):
    batched = True  # a group's keys only move themselves, inside their own layer, and become current

    def __init__(self, num_layers: int | None = None) -> None:
        super().__init__(num_layers)
        self.num_layers = num_layers
        self._pass = 0
        self._last_pass: dict[ExpertKey, int] = {}

    @abstractmethod
    def layer_order(self) -> list[int]:
        """Layers in the order their residents are offered as victims, at the current layer."""

    def on_pass_start(self, pass_id: int) -> None:
        self._pass = pass_id

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        # the base's hooks inlined (the per-request path), plus the pass of the last use
        layer = key[0]
        residents = self._by_layer[layer] if layer < len(self._by_layer) else self._residents(layer)
        residents[key] = None
        self._last_pass[key] = self._pass

    def _touch(self, key: ExpertKey) -> None:
        self._by_layer[key[0]].move_to_end(key)
        self._last_pass[key] = self._pass

    on_access = _touch
    on_prefetch = _touch

    def on_evict(self, key: ExpertKey) -> None:
        del self._by_layer[key[0]][key]
        del self._last_pass[key]

    def is_stale(self, key: ExpertKey) -> bool:
        return self._last_pass[key] < self._pass

    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        order = self.layer_order()
        now, last_pass, by_layer = self._pass, self._last_pass, self._by_layer
        for layer in order:
            for key in by_layer[layer]:
                if last_pass[key] == now:
                    break  # recency order: the rest of this layer is current too
                if key in candidates:
                    return key
        for layer in order:
            for key in by_layer[layer]:
                if key in candidates:
                    return key
        raise ValueError(f"{self.name}: no candidate is a resident it knows")

    def _victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        # victim()'s two sweeps (stale first, then any), taking `count` keys instead of one
        order = self.layer_order()
        now, last_pass, by_layer = self._pass, self._last_pass, self._by_layer
        chosen: list[ExpertKey] = []
        remaining = count
        for layer in order:
            for key in by_layer[layer]:
                if last_pass[key] == now:
                    break  # recency order: the rest of this layer is current too
                if key not in excluded:
                    chosen.append(key)
                    remaining -= 1
                    if not remaining:
                        return chosen
        stale = set(chosen)
        for layer in order:
            for key in by_layer[layer]:
                if key not in excluded and key not in stale:
                    chosen.append(key)
                    remaining -= 1
                    if not remaining:
                        return chosen
        return chosen

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        last_pass = self._last_pass
        for key in victims:
            del last_pass[key]
        super().on_group(keys, misses, victims)
        last_pass.update(dict.fromkeys(keys, self._pass))


class LeastStaleLayerOrder(_LeastStale):
    name = "least-stale-layer-order"
    batched = True

    def layer_order(self) -> list[int]:
        return list(range(len(self._by_layer)))


class LeastStaleReverse(_LeastStale):
    name = "least-stale-reverse"
    batched = True

    def __init__(self, num_layers: int | None = None) -> None:
        super().__init__(num_layers)
        self._orders: dict[tuple[int, int], list[int]] = {}

    def layer_order(self) -> list[int]:
        num_layers, layer = len(self._by_layer), self._layer
        order = self._orders.get((num_layers, layer))
        if order is None:
            order = [(layer - 1 - i) % num_layers for i in range(num_layers)]
            self._orders[(num_layers, layer)] = order
        return order
