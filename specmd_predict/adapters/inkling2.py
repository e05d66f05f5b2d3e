"""Inkling2 text model (inkling2_text): DeepSeek-V4's top-k router in fp32: scores = `scoring_func`(logits)
(sigmoid by default), top-k over scores + `e_score_correction_bias`, the unbiased scores renormalized (+1e-20)
and multiplied by `routed_scaling_factor` (the config's `route_scale`). No groups, no shared experts; every
decoder layer's `mlp` is an MoE block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Inkling2Adapter(MoEAdapter):
    model_type = "inkling2_text"

    @property
    def renormalize(self) -> bool:
        return True

    def _scores(self, layer: int, hidden_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        router = self.router(layer)
        logits_TE = F.linear(hidden_TD.float(), router.weight)
        return logits_TE, router.score_fn(logits_TE)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return self._scores(layer, hidden_TD)[1] + self.router(layer).e_score_correction_bias

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        router = self.router(layer)
        logits_TE, scores_TE = self._scores(layer, hidden_TD)
        ids_TK = torch.topk(scores_TE + router.e_score_correction_bias, self.top_k, dim=-1, sorted=False).indices
        weights_TK = scores_TE.gather(1, ids_TK)
        weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-20)
        return Routing(ids_TK, weights_TK * router.routed_scaling_factor, logits_TE)
