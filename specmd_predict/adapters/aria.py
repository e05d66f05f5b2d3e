"""Aria text model (aria_text): top-k over the raw logits, softmax over only the chosen k, in the hidden
states' dtype (so the weights sum to one). The MoE block (`mlp`) names its router `router`; its
`shared_experts` MLP runs on every token (always resident). Every decoder layer is an MoE layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class AriaTextAdapter(MoEAdapter):
    model_type = "aria_text"
    router_attr = "router"
    shared_experts_attr = "shared_experts"

    @property
    def top_k(self) -> int:
        return self.config.moe_topk

    @property
    def renormalize(self) -> bool:
        return True

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD, self.router(layer).weight)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        top_logits_TK, ids_TK = torch.topk(logits_TE, self.top_k, dim=-1)
        return Routing(ids_TK, F.softmax(top_logits_TK, dim=-1), logits_TE)
