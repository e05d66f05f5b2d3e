"""LFM2-MoE (LiquidAI/LFM2-8B-A1B): sigmoid scores, top-k (optionally over scores + a bias), scaled weights.

scores = sigmoid(logits) in the logits' dtype. With `use_expert_bias` the choice adds `expert_bias`, a fp32
buffer on the MoE block (`feed_forward`), not on the router, and the weights are the chosen experts'
*unbiased* scores; otherwise top-k of the scores. Then divided by (sum + 1e-6) if `norm_topk_prob`, and
multiplied by `routed_scaling_factor`. The first `num_dense_layers` decoder layers are dense; no shared experts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Lfm2MoeAdapter(MoEAdapter):
    model_type = "lfm2_moe"
    moe_block_attr = "feed_forward"
    router_attr = "gate"

    @property
    def renormalize(self) -> bool:
        return bool(self.config.norm_topk_prob)

    def routing_tensors(self, layer: int) -> list[tuple[str, torch.Tensor]]:
        tensors = super().routing_tensors(layer)
        if self.config.use_expert_bias:
            tensors.append(("expert_bias", self.moe_blocks[layer].expert_bias))
        return tensors

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """Sigmoid scores, plus the block's expert bias when the family uses it (what top-k runs on)."""
        scores_TE = torch.sigmoid(F.linear(hidden_TD, self.router(layer).weight))
        return scores_TE + self.moe_blocks[layer].expert_bias if self.config.use_expert_bias else scores_TE

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        scores_TE = torch.sigmoid(logits_TE)
        if self.config.use_expert_bias:
            ids_TK = torch.topk(scores_TE + self.moe_blocks[layer].expert_bias, k=self.top_k, dim=-1)[1]
            weights_TK = scores_TE.gather(1, ids_TK).type_as(logits_TE)
        else:
            weights_TK, ids_TK = torch.topk(scores_TE, k=self.top_k, dim=-1)
        if self.renormalize:
            weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-6)
        weights_TK = weights_TK * self.config.routed_scaling_factor
        return Routing(ids_TK, weights_TK, logits_TE)
