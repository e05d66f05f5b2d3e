"""PhiMoE (microsoft/Phi-3.5-MoE-instruct): the eval-mode "sparsemixer", always exactly two experts.

With eps = `router_jitter_noise` and logits s (no softmax over all experts):
1. first = argmax s. Experts with (s_first - s) / max(|s|, s_first) > 2 eps are masked to -inf; the
   first weight is softmax(masked s)[first].
2. second = argmax of s with `first` removed. With m = s_second, experts with (m - s) / max(|s|, m) > 2 eps
   are masked, `first` stays removed; the second weight is softmax(that)[second].

So the ids are the top-2 logits, but each weight is a softmax over only the experts within the jitter
band of its own winner: weights need not sum to one (not renormalized). Training mode samples instead
(Gumbel noise); adapters reproduce inference only. `num_experts_per_tok` is ignored by the model: K = 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class PhimoeAdapter(MoEAdapter):
    model_type = "phimoe"
    moe_block_attr = "mlp"
    router_attr = "router"

    @property
    def top_k(self) -> int:
        return 2

    @property
    def renormalize(self) -> bool:
        return False

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD, self.router(layer).weight)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        two_eps = 2 * self.config.router_jitter_noise

        # first expert: the best logit, weighted by a softmax over the logits close enough to it
        best_T1, first_T1 = logits_TE.max(dim=-1, keepdim=True)
        far_TE = ((best_T1 - logits_TE) / logits_TE.abs().clamp(min=best_T1)) > two_eps
        first_weight_T1 = F.softmax(logits_TE.masked_fill(far_TE, float("-inf")), dim=-1).gather(-1, first_T1)

        # second expert: the best of the rest, same band rule around its own logit (first stays excluded)
        rest_TE = torch.scatter(logits_TE, -1, first_T1, float("-inf"))
        runner_up_T1, second_T1 = rest_TE.max(dim=-1, keepdim=True)
        far_TE = ((runner_up_T1 - logits_TE) / logits_TE.abs().clamp(min=runner_up_T1)) > two_eps
        second_weight_T1 = F.softmax(rest_TE.masked_fill(far_TE, float("-inf")), dim=-1).gather(-1, second_T1)

        ids_TK = torch.cat((first_T1, second_T1), dim=-1)
        weights_TK = torch.cat((first_weight_T1, second_weight_T1), dim=-1)
        return Routing(ids_TK, weights_TK, logits_TE)
