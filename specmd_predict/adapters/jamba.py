"""Jamba (ai21labs/AI21-Jamba-Mini-1.5): softmax over all experts, top-k, never renormalized.

The top-k softmax probabilities are cast to the hidden states' dtype. Decoder layers with more than one
expert (`layers_num_experts`, i.e. every `expert_layer_period` layers from `expert_layer_offset`) hold the
MoE block in `feed_forward` with its router at `feed_forward.router`; the others are dense. No shared experts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class JambaAdapter(MoEAdapter):
    model_type = "jamba"
    moe_block_attr = "feed_forward"
    router_attr = "router"

    @property
    def renormalize(self) -> bool:
        return False

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.softmax(F.linear(hidden_TD, self.router(layer).weight), dim=-1, dtype=torch.float)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        probs_TE = F.softmax(logits_TE, dim=-1, dtype=torch.float)
        weights_TK, ids_TK = torch.topk(probs_TE, self.top_k, dim=-1)
        return Routing(ids_TK, weights_TK.to(hidden_TD.dtype), logits_TE)
