"""Cohere2-MoE (cohere2_moe): top-k over the raw logits, then softmax or sigmoid over only the chosen k.

`expert_selection_fn`:
- "softmax": weights = fp32 softmax over the k chosen logits (they sum to one);
- "sigmoid": weights = sigmoid of the chosen logits, divided by their sum if `norm_topk_prob`.
Weights are cast to the hidden states' dtype. Decoder layer i is dense when `mlp_layer_types[i] == "dense"`.
With `num_shared_experts` > 0 a block has `shared_experts` every token uses (always resident); otherwise
the block has no such attribute and `shared_experts(l)` is None.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter, UnsupportedModelError
from specmd_predict.routing import Routing

SELECTION_FNS = ("softmax", "sigmoid")


class Cohere2MoeAdapter(MoEAdapter):
    model_type = "cohere2_moe"
    moe_block_attr = "mlp"
    router_attr = "gate"
    shared_experts_attr = "shared_experts"

    def __init__(self, model):
        super().__init__(model)
        if self.config.expert_selection_fn not in SELECTION_FNS:
            raise UnsupportedModelError(
                f"cohere2_moe expert_selection_fn {self.config.expert_selection_fn!r} is not one of "
                f"{', '.join(SELECTION_FNS)}"
            )

    @property
    def renormalize(self) -> bool:
        return self.config.expert_selection_fn == "softmax" or bool(self.config.norm_topk_prob)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD, self.router(layer).weight)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        top_logits_TK, ids_TK = torch.topk(logits_TE, self.top_k, dim=-1)
        if self.config.expert_selection_fn == "softmax":
            weights_TK = F.softmax(top_logits_TK, dim=-1, dtype=torch.float)
        else:
            weights_TK = torch.sigmoid(top_logits_TK)
            if self.config.norm_topk_prob:
                weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK.to(hidden_TD.dtype), logits_TE)
