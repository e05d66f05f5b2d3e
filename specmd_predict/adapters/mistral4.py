"""Mistral 4 (mistral4): softmax over all experts, grouped top-k (no bias), renormalized weights, scaled.

1. scores = softmax(logits) in the logits' dtype.
2. Experts form `n_group` groups; a group scores the sum of its two best scores; only the `topk_group` best
   groups stay (other experts' scores set to 0 for the choice).
3. top-k over those; the weights are the chosen experts' scores, divided by their sum (+1e-20) if
   `norm_topk_prob`, then multiplied by `routed_scaling_factor`.

The first `first_k_dense_replace` decoder layers are dense MLPs. Each MoE block has `shared_experts` used by
every token (always resident).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Mistral4Adapter(MoEAdapter):
    model_type = "mistral4"
    moe_block_attr = "mlp"
    router_attr = "gate"
    shared_experts_attr = "shared_experts"

    @property
    def renormalize(self) -> bool:
        return bool(self.config.norm_topk_prob)

    def _choice(self, scores_TE: torch.Tensor) -> torch.Tensor:
        """Scores with experts outside the `topk_group` best groups at 0: what top-k runs on."""
        num_groups = self.config.n_group
        group_scores_TG = scores_TE.view(-1, num_groups, self.num_experts // num_groups).topk(2, dim=-1)[0].sum(dim=-1)
        group_ids = torch.topk(group_scores_TG, k=self.config.topk_group, dim=-1, sorted=False)[1]
        keep_TG = torch.zeros_like(group_scores_TG).scatter_(1, group_ids, 1).bool()
        keep_TE = keep_TG.repeat_interleave(self.num_experts // num_groups, dim=-1)
        return scores_TE.masked_fill(~keep_TE, 0.0)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """Softmax scores, 0 outside the kept groups."""
        return self._choice(F.linear(hidden_TD, self.router(layer).weight).softmax(-1))

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        scores_TE = logits_TE.softmax(-1)
        ids_TK = torch.topk(self._choice(scores_TE), k=self.top_k, dim=-1, sorted=False)[1]
        weights_TK = scores_TE.gather(1, ids_TK)
        if self.renormalize:
            weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-20)
        weights_TK = weights_TK * self.config.routed_scaling_factor
        return Routing(ids_TK, weights_TK, logits_TE)
