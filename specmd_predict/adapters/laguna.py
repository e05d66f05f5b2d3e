"""Laguna (laguna): soft-capped logits, sigmoid scores, top-k over scores + a correction bias, renormalized.

`LagunaTopKRouter`: logits = linear(hidden, weight) in fp32, soft-capped as cap * tanh(logits / cap) when
`moe_router_logit_softcapping` > 0; scores = sigmoid(logits); top-k over scores + `e_score_correction_bias`
(a frozen parameter of the router); the weights are the unbiased scores divided by their sum, cast to the hidden
states' dtype. The block multiplies its *output* by `moe_routed_scaling_factor`, not the weights. Decoder layer i
is an MoE layer when `mlp_layer_types[i] == "sparse"`; each MoE block has `shared_experts` (always resident).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class LagunaAdapter(MoEAdapter):
    model_type = "laguna"
    shared_experts_attr = "shared_experts"

    @property
    def renormalize(self) -> bool:
        return True

    def _scores(self, layer: int, hidden_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        router = self.router(layer)
        logits_TE = F.linear(hidden_TD, router.weight).float()
        cap = router.router_logit_softcapping
        if cap > 0.0:
            logits_TE = torch.tanh(logits_TE / cap) * cap
        return logits_TE, torch.sigmoid(logits_TE)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return self._scores(layer, hidden_TD)[1] + self.router(layer).e_score_correction_bias.float()

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE, scores_TE = self._scores(layer, hidden_TD)
        choice_TE = scores_TE + self.router(layer).e_score_correction_bias.to(scores_TE.dtype)
        ids_TK = torch.topk(choice_TE, self.top_k, dim=-1)[1]
        weights_TK = scores_TE.gather(-1, ids_TK)
        weights_TK = (weights_TK / weights_TK.sum(dim=-1, keepdim=True)).to(hidden_TD.dtype)
        return Routing(ids_TK, weights_TK, logits_TE)
