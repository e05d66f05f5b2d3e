"""Qwen3-VL-MoE (Qwen/Qwen3-VL-30B-A3B; text model `qwen3_vl_moe_text`): softmax, top-k, always renormalized.

No shared experts. Layers in `mlp_only_layers`, or off the `decoder_sparse_step` grid, are dense MLPs. The
vision tower does not route. Registered under the text config's type, which is what `get_adapter` reads for
the image-text checkpoint (loaded with AutoModelForImageTextToText).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Qwen3VLMoeAdapter(MoEAdapter):
    model_type = "qwen3_vl_moe_text"
    moe_block_attr = "mlp"
    router_attr = "gate"

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
