"""gpt-oss (openai/gpt-oss-20b, -120b): top-k over the raw logits (router has a bias), softmax over the top-k.

Softmax over only the chosen k logits means the weights always sum to one (renormalized by construction).
The MoE block is `mlp` with its router at `mlp.router`. Experts store four stacked tensors, all sliced per
expert: `gate_up_proj [E, D, 2I]`, `gate_up_proj_bias [E, 2I]`, `down_proj [E, I, D]`, `down_proj_bias [E, D]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class GptOssAdapter(MoEAdapter):
    model_type = "gpt_oss"
    moe_block_attr = "mlp"
    router_attr = "router"

    @property
    def renormalize(self) -> bool:
        return True

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        router = self.router(layer)
        return F.linear(hidden_TD, router.weight, router.bias)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        router = self.router(layer)
        logits_TE = F.linear(hidden_TD, router.weight, router.bias)
        top_logits_TK, ids_TK = torch.topk(logits_TE, self.top_k, dim=-1)
        weights_TK = F.softmax(top_logits_TK, dim=-1, dtype=top_logits_TK.dtype)
        return Routing(ids_TK, weights_TK, logits_TE)
