"""Qwen3-Next (Qwen/Qwen3-Next-80B-A3B): softmax, top-k, renormalized only if `norm_topk_prob`; one shared expert.

The routing is Qwen2-MoE's: each MoE block has a `shared_expert` MLP (behind a sigmoid `shared_expert_gate`)
that every token uses, so it is always resident. The hybrid attention (Gated DeltaNet / full attention) does
not touch routing. Layers in `mlp_only_layers`, or off the `decoder_sparse_step` grid, are dense MLPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Qwen3NextAdapter(MoEAdapter):
    model_type = "qwen3_next"
    moe_block_attr = "mlp"
    router_attr = "gate"
    shared_experts_attr = "shared_expert"

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
