"""Kolibri-1 (kolibri1): top-k over fp32 logits + a correction bias; the weights are the sigmoid of the chosen
(unbiased) logits, renormalized only if `norm_topk_prob`. Each MoE block has `shared_experts` (always resident).
The router's CUDA fast path (a bf16 GEMM with fp32 output) computes the same fp32 logits up to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Kolibri1Adapter(MoEAdapter):
    model_type = "kolibri1"
    shared_experts_attr = "shared_experts"

    @property
    def renormalize(self) -> bool:
        return bool(self.config.norm_topk_prob)

    def _logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD.float(), self.router(layer).weight.float())

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return self._logits(layer, hidden_TD) + self.router(layer).e_score_correction_bias

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = self._logits(layer, hidden_TD)
        ids_TK = torch.topk(logits_TE + self.router(layer).e_score_correction_bias, self.top_k, dim=-1)[1]
        weights_TK = logits_TE.gather(1, ids_TK).sigmoid()
        if self.renormalize:
            weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK, logits_TE)
