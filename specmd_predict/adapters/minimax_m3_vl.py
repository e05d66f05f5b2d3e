"""MiniMax-M3 text model (minimax_m3_vl_text): MiniMax-M2's rule with the correction bias on the router.

`MiniMaxM3VLTopKRouter` extends MiniMax-M2's router with its own `e_score_correction_bias` buffer: sigmoid of the
logits (in fp32), top-k over scores + bias, weights the unbiased scores renormalized. The block multiplies its
*output* by `routed_scaling_factor`, not the weights. Decoder layer i is an MoE layer when
`mlp_layer_types[i] == "sparse"`; each MoE block has `shared_experts` (always resident).
"""

from __future__ import annotations

import torch

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.adapters.minimax_m2 import MiniMaxM2Adapter


class MiniMaxM3Adapter(MiniMaxM2Adapter):
    model_type = "minimax_m3_vl_text"
    shared_experts_attr = "shared_experts"

    def correction_bias(self, layer: int) -> torch.Tensor:
        return self.router(layer).e_score_correction_bias

    def routing_tensors(self, layer: int) -> list[tuple[str, torch.Tensor]]:
        return MoEAdapter.routing_tensors(self, layer)  # the bias is the router's own buffer
