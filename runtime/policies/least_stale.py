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
Per layer an intrusive list keeps residents' ids by recency, with the pass of each one's last use
(runtime/policies/layer_recency.py), so stale ones sit at its front: victim is O(L) + skips.
"""

from __future__ import annotations

from abc import abstractmethod

from runtime.policies.layer_recency import LayerRecencyEviction
from specmd_predict.routing import ExpertKey


class _LeastStale(LayerRecencyEviction):
    batched = True  # a group's keys only move themselves, inside their own layer, and become current
    batched_ids = True
    stale_first = True

    def __init__(self, num_layers: int | None = None) -> None:
        super().__init__(num_layers)
        self.num_layers = num_layers

    @abstractmethod
    def layer_order(self) -> list[int]:
        """Layers in the order their residents are offered as victims, at the current layer."""

    def on_pass_start(self, pass_id: int) -> None:
        self._lists.pass_id = pass_id

    def is_stale(self, key: ExpertKey) -> bool:
        return self._lists.is_stale(key)


class LeastStaleLayerOrder(_LeastStale):
    name = "least-stale-layer-order"
    batched = True
    batched_ids = True
    reverse = False

    def layer_order(self) -> list[int]:
        return list(range(self._lists.num_layers))


class LeastStaleReverse(_LeastStale):
    name = "least-stale-reverse"
    batched = True
    batched_ids = True
    reverse = True

    def layer_order(self) -> list[int]:
        num_layers, layer = self._lists.num_layers, self._layer
        return [(layer - 1 - i) % num_layers for i in range(num_layers)]
