"""Flint (flint): sigmoid of fp32 logits, top-k of the scores (no bias, no groups), renormalized only if
`norm_topk_prob`; the weights stay fp32. Each MoE block adds its `shared_expert` in full for every token
(always resident).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class FlintAdapter(MoEAdapter):
    model_type = "flint"
    shared_experts_attr = "shared_expert"

    @property
    def renormalize(self) -> bool:
        return bool(self.config.norm_topk_prob)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD.float(), self.router(layer).weight.float()).sigmoid()

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD.float(), self.router(layer).weight.float())
        weights_TK, ids_TK = torch.topk(logits_TE.sigmoid(), self.top_k, dim=-1)
        if self.renormalize:
            weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK, logits_TE)
