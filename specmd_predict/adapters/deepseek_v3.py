"""DeepSeek-V3 / R1 (deepseek-ai/DeepSeek-V3): sigmoid scores, grouped top-k with a bias, scaled weights.

1. scores = sigmoid(fp32 logits); choice = scores + `e_score_correction_bias` (a per-expert buffer
   the aux-loss-free balancing learned; it only affects which experts are chosen, not their weights).
2. Experts form `n_group` groups; a group scores the sum of its two best choice values; only the
   `topk_group` best groups stay (other experts' choice set to -inf).
3. top-k over choice; the weights are the chosen experts' *unbiased* sigmoid scores, divided by their
   sum (+1e-20) if `norm_topk_prob`, then multiplied by `routed_scaling_factor`.

The first `first_k_dense_replace` decoder layers are dense MLPs, not MoE layers. Each MoE block has
`shared_experts` used by every token (always resident).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class DeepseekV3Adapter(MoEAdapter):
    model_type = "deepseek_v3"
    moe_block_attr = "mlp"
    router_attr = "gate"
    shared_experts_attr = "shared_experts"
    outside_groups: ClassVar[float] = float("-inf")  # the choice value of experts outside the kept groups

    @property
    def renormalize(self) -> bool:
        return bool(self.config.norm_topk_prob)

    @property
    def weight_scale(self) -> float:
        """What the router multiplies the (renormalized) weights by: `routed_scaling_factor`."""
        return self.config.routed_scaling_factor

    def _sigmoid_scores(self, layer: int, hidden_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits_TE = F.linear(hidden_TD.float(), self.router(layer).weight.float())
        return logits_TE, logits_TE.sigmoid()

    def _choice(self, layer: int, scores_TE: torch.Tensor) -> torch.Tensor:
        """Biased scores with experts outside the `topk_group` best groups at -inf: what top-k runs on."""
        choice_TE = scores_TE + self.router(layer).e_score_correction_bias
        num_groups = self.config.n_group
        if num_groups is None:  # families where grouping is optional (A.X-K2)
            return choice_TE
        group_scores_TG = choice_TE.view(-1, num_groups, self.num_experts // num_groups).topk(2, dim=-1)[0].sum(dim=-1)
        group_ids = torch.topk(group_scores_TG, k=self.config.topk_group, dim=-1, sorted=False)[1]
        keep_TG = torch.zeros_like(group_scores_TG).scatter_(1, group_ids, 1).bool()
        keep_TE = keep_TG.repeat_interleave(self.num_experts // num_groups, dim=-1)
        return choice_TE.masked_fill(~keep_TE, self.outside_groups)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """sigmoid + e_score_correction_bias, -inf outside the kept groups (the model's own top-k input)."""
        return self._choice(layer, self._sigmoid_scores(layer, hidden_TD)[1])

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE, scores_TE = self._sigmoid_scores(layer, hidden_TD)
        ids_TK = torch.topk(self._choice(layer, scores_TE), k=self.top_k, dim=-1, sorted=False)[1]
        weights_TK = scores_TE.gather(1, ids_TK)
        if self.renormalize:
            weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-20)
        weights_TK = weights_TK * self.weight_scale
        return Routing(ids_TK, weights_TK, logits_TE)
