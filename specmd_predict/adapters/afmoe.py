"""AFMoE (arcee-ai/Trinity-Mini, afmoe): sigmoid scores, top-k over scores + an expert bias, renormalized, scaled.

scores = sigmoid(fp32 logits of `mlp.router.gate`, an nn.Linear); the choice adds `expert_bias`, a parameter
that lives on the MoE block (`mlp`), not on the router; the weights are the chosen experts' *unbiased*
scores divided by (their sum + 1e-20), times `route_scale`. The first `num_dense_layers` decoder layers are
dense; each MoE block has `shared_experts` used by every token (always resident).
"""

from __future__ import annotations

import torch

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class AfmoeAdapter(MoEAdapter):
    model_type = "afmoe"
    moe_block_attr = "mlp"
    router_attr = "router"
    shared_experts_attr = "shared_experts"

    @property
    def num_experts(self) -> int:
        return self.router(0).gate.weight.shape[0]

    @property
    def renormalize(self) -> bool:
        return True

    def routing_tensors(self, layer: int) -> list[tuple[str, torch.Tensor]]:
        return [*super().routing_tensors(layer), ("expert_bias", self.moe_blocks[layer].expert_bias)]

    def _scores(self, layer: int, hidden_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits_TE = self.router(layer).gate(hidden_TD).to(torch.float32)
        return logits_TE, torch.sigmoid(logits_TE)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """Sigmoid scores plus the block's expert bias (what top-k runs on)."""
        return self._scores(layer, hidden_TD)[1] + self.moe_blocks[layer].expert_bias

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE, scores_TE = self._scores(layer, hidden_TD)
        ids_TK = torch.topk(scores_TE + self.moe_blocks[layer].expert_bias, k=self.top_k, dim=1)[1]
        weights_TK = scores_TE.gather(dim=1, index=ids_TK)
        weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-20)
        return Routing(ids_TK, weights_TK * self.config.route_scale, logits_TE)
