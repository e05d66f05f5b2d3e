"""Qwen3.5-MoE (qwen3_5_moe; the text model, config type `qwen3_5_moe_text`): softmax, top-k, always renormalized.

Each MoE block has a `shared_expert` MLP (behind a sigmoid `shared_expert_gate`) every token uses: always
resident. Every decoder layer is an MoE layer; the hybrid attention does not touch routing. Registered
under the text config's type, which is what `get_adapter` reads (also for the vision-language checkpoint).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Qwen35MoeAdapter(MoEAdapter):
    model_type = "qwen3_5_moe_text"
    moe_block_attr = "mlp"
    router_attr = "gate"
    shared_experts_attr = "shared_expert"

    @property
    def renormalize(self) -> bool:
        return True

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        return F.softmax(logits_TE, dim=-1, dtype=torch.float)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        probs_TE = F.softmax(logits_TE, dim=-1, dtype=torch.float)
        weights_TK, ids_TK = torch.topk(probs_TE, self.top_k, dim=-1)
        weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK.to(logits_TE.dtype), logits_TE)
