"""Granite MoE (ibm-granite/granite-3.0-1b-a400m, -3b-a800m): top-k over fp32 logits, softmax over the top-k.

Like gpt-oss (but no router bias): the weights are a softmax over only the chosen k logits, so they sum to
one, and are cast back to the hidden states' dtype. The MoE block is `block_sparse_moe`, its router `router`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class GraniteMoeAdapter(MoEAdapter):
    model_type = "granitemoe"
    moe_block_attr = "block_sparse_moe"
    router_attr = "router"

    @property
    def renormalize(self) -> bool:
        return True

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD, self.router(layer).weight).float()

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight).float()
        top_logits_TK, ids_TK = logits_TE.topk(self.top_k, dim=-1)
        weights_TK = torch.softmax(top_logits_TK, dim=-1).type_as(hidden_TD)
        return Routing(ids_TK, weights_TK, logits_TE)
