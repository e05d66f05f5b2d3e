"""Gemma 4 text model (gemma4_text, with `enable_moe_block`): an RMS-normed, per-expert-scaled softmax router.

The decoder layer itself holds `router` and `experts` next to its dense `mlp` (both run; their outputs are
added), so there is no MoE block module: `moe_block_attr = None`. Gemma4TextRouter on the layer's input x:
h = RMSNorm(x) without weight (in fp32, cast back) * `scale` * hidden_size^-0.5; scores = proj(h);
probs = fp32 softmax; top-`top_k_experts`; renormalized to sum to one; then each weight times the chosen
expert's `per_expert_scale`. The router returns the probabilities in place of logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Gemma4Adapter(MoEAdapter):
    model_type = "gemma4_text"
    moe_block_attr = None
    router_attr = "router"

    @property
    def top_k(self) -> int:
        return self.config.top_k_experts

    @property
    def num_experts(self) -> int:
        return self.router(0).proj.weight.shape[0]

    @property
    def renormalize(self) -> bool:
        return False  # renormalized, then scaled per expert: the sum is not constant

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        router = self.router(layer)
        normed_TD = router.norm(hidden_TD) * router.scale * router.scalar_root_size
        return F.softmax(router.proj(normed_TD), dim=-1, dtype=torch.float32)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        probs_TE = self.selection_scores(layer, hidden_TD)
        weights_TK, ids_TK = torch.topk(probs_TE, k=self.top_k, dim=-1)
        weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK * self.router(layer).per_expert_scale[ids_TK], probs_TE)
