"""Granite MoE with a shared MLP (granitemoeshared): Granite MoE's rule, top-k logits, softmax over the k.

The weights are a softmax over only the chosen k fp32 logits (they sum to one), cast back to the hidden
states' dtype. Every decoder layer holds a `block_sparse_moe`. The shared MLP (`shared_mlp`) every token uses
sits on the decoder layer, not on the MoE block, so `shared_experts(l)` reads it there (None when
`shared_intermediate_size` is 0).

The routing rule is written out once, in granitemoe.py.
"""

from __future__ import annotations

from torch import nn

from specmd_predict.adapters.base import _decoder_layers
from specmd_predict.adapters.granitemoe import GraniteMoeAdapter


class GraniteMoeSharedAdapter(GraniteMoeAdapter):
    model_type = "granitemoeshared"

    def shared_experts(self, layer: int) -> nn.Module | None:
        return getattr(_decoder_layers(self.model)[self.decoder_indices[layer]], "shared_mlp", None)
