"""MiniMax-Text-01 (MiniMaxAI/MiniMax-Text-01): Mixtral's rule: fp32 softmax over all experts, top-k, renormalized.

The top-k weights stay fp32 (the router never casts back). `router_jitter_noise` acts only in training.
The hybrid lightning/full attention does not touch routing; every decoder layer is an MoE layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class MiniMaxAdapter(MoEAdapter):
    model_type = "minimax"
    moe_block_attr = "mlp"
    router_attr = "gate"

    @property
    def renormalize(self) -> bool:
        return True

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        return F.softmax(logits_TE.float(), dim=-1)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        probs_TE = F.softmax(logits_TE.float(), dim=-1)
        weights_TK, ids_TK = torch.topk(probs_TE, self.top_k, dim=-1)
        weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK, logits_TE)
