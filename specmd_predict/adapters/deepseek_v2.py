"""DeepSeek-V2 (deepseek-ai/DeepSeek-V2, -V2-Lite): fp32 softmax over all experts, then `topk_method`:

- "greedy": top-k over all experts (V2-Lite);
- "group_limited_greedy": experts form `n_group` groups, a group scores its best expert, only the
  `topk_group` best groups stay (other experts' scores set to 0), then top-k (V2).

The top-k softmax probabilities are multiplied by `routed_scaling_factor` and never renormalized
(transformers 5 ignores `norm_topk_prob` for this family, as the released V2 checkpoints set it false).
The first `first_k_dense_replace` decoder layers are dense MLPs, not MoE layers. Each MoE block has
`shared_experts` (one MLP of width `n_shared_experts` x moe_intermediate_size) used by every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter, UnsupportedModelError
from specmd_predict.routing import Routing

TOPK_METHODS = ("greedy", "group_limited_greedy")


class DeepseekV2Adapter(MoEAdapter):
    model_type = "deepseek_v2"
    moe_block_attr = "mlp"
    router_attr = "gate"
    shared_experts_attr = "shared_experts"

    def __init__(self, model):
        super().__init__(model)
        if self.config.topk_method not in TOPK_METHODS:
            raise UnsupportedModelError(
                f"deepseek_v2 topk_method {self.config.topk_method!r} is not one of {', '.join(TOPK_METHODS)}"
            )

    @property
    def renormalize(self) -> bool:
        return False

    def _limit_groups(self, scores_TE: torch.Tensor) -> torch.Tensor:
        """group_limited_greedy: zero the experts outside the `topk_group` groups with the best max score."""
        if self.config.topk_method != "group_limited_greedy":
            return scores_TE
        num_groups = self.config.n_group
        group_scores_TG = scores_TE.view(-1, num_groups, self.num_experts // num_groups).max(dim=-1).values
        group_ids = torch.topk(group_scores_TG, k=self.config.topk_group, dim=-1, sorted=False)[1]
        keep_TG = torch.zeros_like(group_scores_TG).scatter_(1, group_ids, 1).bool()
        keep_TE = keep_TG.repeat_interleave(self.num_experts // num_groups, dim=-1)
        return scores_TE.masked_fill(~keep_TE, 0.0)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """fp32 softmax probabilities; with group_limited_greedy, 0 outside the kept groups."""
        logits_TE = F.linear(hidden_TD.float(), self.router(layer).weight.float())
        return self._limit_groups(logits_TE.softmax(dim=-1, dtype=torch.float32))

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD.float(), self.router(layer).weight.float())
        scores_TE = self._limit_groups(logits_TE.softmax(dim=-1, dtype=torch.float32))
        weights_TK, ids_TK = torch.topk(scores_TE, k=self.top_k, dim=-1, sorted=False)
        weights_TK = weights_TK * self.config.routed_scaling_factor
        return Routing(ids_TK, weights_TK, logits_TE)
