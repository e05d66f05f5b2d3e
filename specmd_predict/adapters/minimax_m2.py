"""MiniMax-M2 (MiniMaxAI/MiniMax-M2): sigmoid scores, top-k over scores + a correction bias, renormalized.

scores = sigmoid(fp32 logits); the choice adds the per-expert `e_score_correction_bias`, a buffer that lives
on the MoE block (`mlp`), not on the router; the weights are the chosen experts' *unbiased* scores divided
by their sum (fp32). No groups, no scaling, no shared experts; every decoder layer is an MoE layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class MiniMaxM2Adapter(MoEAdapter):
    model_type = "minimax_m2"
    moe_block_attr = "mlp"
    router_attr = "gate"

    @property
    def renormalize(self) -> bool:
        return True

    def correction_bias(self, layer: int) -> torch.Tensor:
        return self.moe_blocks[layer].e_score_correction_bias

    def routing_tensors(self, layer: int) -> list[tuple[str, torch.Tensor]]:
        bias = ("e_score_correction_bias", self.correction_bias(layer))
        return [*super().routing_tensors(layer), bias]

    def _scores(self, layer: int, hidden_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.router(layer).weight
        logits_TE = F.linear(hidden_TD.to(weight.dtype), weight)
        return logits_TE, torch.sigmoid(logits_TE.float())

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """Sigmoid scores plus the block's correction bias (what top-k runs on)."""
        return self._scores(layer, hidden_TD)[1] + self.correction_bias(layer)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE, scores_TE = self._scores(layer, hidden_TD)
        choice_TE = scores_TE + self.correction_bias(layer)
        ids_TK = torch.topk(choice_TE, self.top_k, dim=-1, sorted=False)[1]
        weights_TK = scores_TE.gather(1, ids_TK)
        weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK, logits_TE)
