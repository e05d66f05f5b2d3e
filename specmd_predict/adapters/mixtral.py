"""Mixtral (mistralai/Mixtral-8x7B): softmax over all experts in fp32, top-k, always renormalized.

The router returns its top-k weights in fp32 (it never casts back to the logits' dtype).
`router_jitter_noise` only acts in training, so the eval-mode rule below is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class MixtralAdapter(MoEAdapter):
    model_type = "mixtral"
    moe_block_attr = "mlp"
    router_attr = "gate"

    @property
    def renormalize(self) -> bool:
        return True

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        return F.softmax(logits_TE.float(), dim=-1)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        probs_TE = F.softmax(logits_TE.float(), dim=-1)
        weights_TK, ids_TK = torch.topk(probs_TE, self.top_k, dim=-1)
        weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK, logits_TE)
