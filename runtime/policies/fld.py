"""FLD eviction (farthest layer distance first): the evictable resident whose layer comes latest in the sweep.

    make_eviction("fld", num_layers=16)

At current layer l, a resident of layer j is next needed (j - l) mod L layers ahead in the sweep 0 -> L-1 ->
next pass, so layers are tried in the order l-1, l-2, ..., l+1, l; inside a layer the least recently used
goes first. Per layer an intrusive list keeps residents' ids by recency (runtime/policies/layer_recency.py), so
`victim` is O(L) + skips. Without `num_layers` the policy uses the highest layer it has seen plus one.
"""

from __future__ import annotations

from runtime.policies.layer_recency import LayerRecencyEviction


class FLD(LayerRecencyEviction):
    name = "fld"
    batched = True  # a group's keys only move themselves, inside their own layer
    batched_ids = True
    reverse = True  # layers l-1, l-2, ..., l
    stale_first = False
