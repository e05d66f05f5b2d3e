"""Hunyuan-A13B (tencent/Hunyuan-A13B-Instruct): softmax over all experts, top-k, always renormalized.

The router is `mlp.gate` but its weight lives in `mlp.gate.wg` (an fp32 nn.Linear; when it is fp32 the
hidden states are upcast first). Each block has a `shared_mlp` every token uses (always resident).
The config may give `num_experts`/`moe_topk` per layer as lists; transformers' experts module then
breaks, so only int values are supported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter, UnsupportedModelError
from specmd_predict.routing import Routing


class HunyuanV1MoeAdapter(MoEAdapter):
    model_type = "hunyuan_v1_moe"
    moe_block_attr = "mlp"
    router_attr = "gate"
    shared_experts_attr = "shared_mlp"

    def __init__(self, model):
        super().__init__(model)
        if not isinstance(self.config.num_experts, int) or not isinstance(self.config.moe_topk, int):
            raise UnsupportedModelError("hunyuan_v1_moe with per-layer num_experts/moe_topk lists is not supported")

    @property
    def num_experts(self) -> int:
        return self.router(0).wg.weight.shape[0]

    @property
    def renormalize(self) -> bool:
        return True

    def _logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        weight = self.router(layer).wg.weight
        return F.linear(hidden_TD.float() if weight.dtype == torch.float32 else hidden_TD, weight)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.softmax(self._logits(layer, hidden_TD), dim=-1, dtype=torch.float)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = self._logits(layer, hidden_TD)
        probs_TE = F.softmax(logits_TE, dim=-1, dtype=torch.float)
        weights_TK, ids_TK = torch.topk(probs_TE, self.top_k, dim=-1)
        weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK.to(logits_TE.dtype), logits_TE)
