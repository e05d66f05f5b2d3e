"""FlexOlmo (allenai/FlexOlmo-7x7B-1T): OLMoE's rule, softmax over all experts, then top-k; renormalized only if
`norm_topk_prob`. Every decoder layer is an MoE layer; no shared experts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class FlexOlmoAdapter(MoEAdapter):
    model_type = "flex_olmo"
    moe_block_attr = "mlp"
    router_attr = "gate"

    @property
    def renormalize(self) -> bool:
        return bool(self.config.norm_topk_prob)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        return F.softmax(logits_TE, dim=-1, dtype=torch.float)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        probs_TE = F.softmax(logits_TE, dim=-1, dtype=torch.float)
        weights_TK, ids_TK = torch.topk(probs_TE, self.top_k, dim=-1)
        if self.renormalize:
            weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK.to(logits_TE.dtype), logits_TE)
