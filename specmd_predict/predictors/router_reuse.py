"""Router reuse (training-free): layer l+h's real router applied to layer l's router input.

    predictor = RouterReusePredictor(adapter, horizon=3)
    probs_THE = predictor.predict(layer, hidden_TD)   # [T, H_eff, E]

The residual stream changes little from one layer to the next, so the next routers, run early, already
guess most of their own choices. It needs the live model (through its adapter) and is never saved in a bank.
"""

from __future__ import annotations

import torch

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.predictors.base import ExpertPredictor


def selection_probs_from_scores(scores_TE: torch.Tensor, top_k: int) -> torch.Tensor:
    """Map an adapter's selection scores to [0, 1] selection probabilities, order preserved.

    Scores that are a distribution over E (softmax routers) become 1 - (1 - q)^K, the same rule as the
    learned predictors, so the two are comparable; other scores (e.g. sigmoid or raw) go through a softmax first.
    """
    scores_TE = scores_TE.float()
    is_distribution = bool((scores_TE >= 0).all()) and torch.allclose(
        scores_TE.sum(-1), torch.ones((), dtype=scores_TE.dtype), atol=1e-3
    )
    q_TE = scores_TE if is_distribution else torch.softmax(scores_TE, dim=-1)
    return -torch.expm1(top_k * torch.log1p(-q_TE.clamp(max=1 - 1e-6)))


class RouterReusePredictor(ExpertPredictor):
    kind = "router-reuse"

    def __init__(self, adapter: MoEAdapter, horizon: int = 3):
        super().__init__(adapter.identity(), horizon)
        self.adapter = adapter

    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """Log selection scores of the later routers (a softmax of them gives back the scores)."""
        return torch.log(self._scores(layer, hidden_TD).clamp(min=1e-30))

    @torch.no_grad()
    def predict(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        scores_THE = self._scores(layer, hidden_TD)
        return selection_probs_from_scores(scores_THE, self.top_k)

    def _scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        num_ahead = self.horizon_at(layer)
        if num_ahead == 0:
            return self._empty(hidden_TD)
        router_weight = self.adapter.router(layer).weight
        hidden_TD = hidden_TD.to(device=router_weight.device, dtype=router_weight.dtype)
        return torch.stack(
            [self.adapter.selection_scores(layer + h, hidden_TD).float() for h in range(1, num_ahead + 1)], dim=1
        )
