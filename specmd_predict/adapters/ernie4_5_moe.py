"""ERNIE-4.5 MoE (baidu/ERNIE-4.5-21B-A3B): fp32 softmax, top-k over probabilities + a correction bias.

The choice adds `gate.moe_statics.e_score_correction_bias` (shape [1, E]) to the softmax probabilities; the
weights are the chosen experts' *unbiased* probabilities divided by their sum (clamped below at
`moe_norm_min`), cast to the hidden states' dtype. MoE layers are decoder layers i with
(i + 1) % `moe_layer_interval` == 0 and `moe_layer_start_index` <= i <= `moe_layer_end_index`; the others
are dense. With `moe_num_shared_experts` > 0 each block has `shared_experts` used by every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Ernie45MoeAdapter(MoEAdapter):
    model_type = "ernie4_5_moe"
    moe_block_attr = "mlp"
    router_attr = "gate"
    shared_experts_attr = "shared_experts"  # None in the block when moe_num_shared_experts == 0

    @property
    def renormalize(self) -> bool:
        return True

    def _probs(self, layer: int, hidden_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits_TE = F.linear(hidden_TD.float(), self.router(layer).weight.float())
        return logits_TE, F.softmax(logits_TE, dim=-1, dtype=torch.float)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities plus the correction bias (what top-k runs on)."""
        bias_E = self.router(layer).moe_statics.e_score_correction_bias.squeeze()
        return self._probs(layer, hidden_TD)[1] + bias_E

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE, probs_TE = self._probs(layer, hidden_TD)
        bias_E = self.router(layer).moe_statics.e_score_correction_bias.squeeze()
        ids_TK = torch.topk(probs_TE + bias_E, self.top_k, dim=-1)[1]
        weights_TK = probs_TE.gather(-1, ids_TK)
        weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True).clamp(min=self.config.moe_norm_min)
        return Routing(ids_TK, weights_TK.to(hidden_TD.dtype), logits_TE)
