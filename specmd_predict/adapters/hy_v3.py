"""Hunyuan v3 (hy_v3): MiniMax-M2's rule (sigmoid, top-k over scores + a block-level correction bias,
renormalized) in fp32 throughout, with an epsilon in the renormalization and the weights times the router's
`router_scaling_factor`. Decoder layer i is an MoE layer when `mlp_layer_types[i] == "sparse"`; each MoE block
has `shared_experts` (always resident).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.minimax_m2 import MiniMaxM2Adapter
from specmd_predict.routing import Routing


class HYV3Adapter(MiniMaxM2Adapter):
    model_type = "hy_v3"
    shared_experts_attr = "shared_experts"

    def _scores(self, layer: int, hidden_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits_TE = F.linear(hidden_TD.float(), self.router(layer).weight.float())
        return logits_TE, torch.sigmoid(logits_TE)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE, scores_TE = self._scores(layer, hidden_TD)
        ids_TK = torch.topk(scores_TE + self.correction_bias(layer), self.top_k, dim=-1, sorted=False)[1]
        weights_TK = scores_TE.gather(1, ids_TK)
        weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-20)
        return Routing(ids_TK, weights_TK * self.router(layer).router_scaling_factor, logits_TE)
