"""Granite 4 hybrid (ibm-granite/granite-4.0-h-tiny, granitemoehybrid): top-k logits, softmax over the k.

The weights are a softmax over only the chosen k fp32 logits (they sum to one), cast back to the hidden
states' dtype. Decoder layers (Mamba or attention) hold a `block_sparse_moe` unless `num_local_experts` is 0.
The shared MLP (`shared_mlp`) every token uses sits on the decoder layer, not on the MoE block, so
`shared_experts(l)` reads it there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specmd_predict.adapters.base import MoEAdapter, _decoder_layers
from specmd_predict.routing import Routing


class GraniteMoeHybridAdapter(MoEAdapter):
    model_type = "granitemoehybrid"
    moe_block_attr = "block_sparse_moe"
    router_attr = "router"

    @property
    def renormalize(self) -> bool:
        return True

    def shared_experts(self, layer: int) -> nn.Module | None:
        return getattr(_decoder_layers(self.model)[self.decoder_indices[layer]], "shared_mlp", None)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD, self.router(layer).weight).float()

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight).float()
        top_logits_TK, ids_TK = logits_TE.topk(self.top_k, dim=-1)
        weights_TK = torch.softmax(top_logits_TK, dim=-1).type_as(hidden_TD)
        return Routing(ids_TK, weights_TK, logits_TE)
