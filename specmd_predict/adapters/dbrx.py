"""DBRX (databricks/dbrx-base, -instruct): softmax over all experts in the logits' dtype, top-k, p-norm scaled.

The router (`ffn.router`, a DbrxRouter holding one bias-free Linear `layer`) returns only logits; DbrxFFN then
takes softmax(logits) in their own dtype, the top `moe_top_k`, and divides them by their
`moe_normalize_expert_weights`-norm (the L1 norm, i.e. a sum-to-one renormalization, for the released p = 1;
no scaling when it is None). So the model's own choice is recorded on the experts module's call
(`routing_module`), which receives the chosen ids and weights.

DBRX stores its experts fused: `ffn.experts.mlp.w1`, `v1`, `w2` are [E x ffn_hidden_size, d_model] matrices.
`experts(layer)` is a view module over the same storage with a leading expert dimension
(`w1`, `v1`, `w2`: [E, ffn_hidden_size, d_model]), so bytes per expert and per-expert slices read like every
other family's. It has no forward: the offloading runtime, which drives an experts module called with the routed
ids, refuses DBRX with its usual one-line error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class DbrxStackedExperts(nn.Module):
    """A read-only [E, ffn, D] view of one layer's fused DBRX expert weights (no copy, not part of the model)."""

    def __init__(self, fused_glu: nn.Module, num_experts: int):
        super().__init__()
        for name in ("w1", "v1", "w2"):
            fused_XD = getattr(fused_glu, name)
            self.register_buffer(name, fused_XD.view(num_experts, -1, fused_XD.shape[-1]), persistent=False)


class DbrxAdapter(MoEAdapter):
    model_type = "dbrx"
    moe_block_attr = "ffn"
    router_attr = "router"

    def __init__(self, model):
        super().__init__(model)
        self._stacked = [DbrxStackedExperts(block.experts.mlp, self.num_experts) for block in self.moe_blocks]

    @property
    def num_experts(self) -> int:
        return self.router(0).layer.weight.shape[0]

    @property
    def top_k(self) -> int:
        return self.config.ffn_config.moe_top_k

    @property
    def hidden_size(self) -> int:
        return self.config.d_model

    @property
    def renormalize(self) -> bool:
        return self.config.ffn_config.moe_normalize_expert_weights == 1

    def experts(self, layer: int) -> nn.Module:
        return self._stacked[layer]

    def routing_module(self, layer: int) -> nn.Module:
        return self.moe_blocks[layer].experts

    def routing_from_hook(self, layer: int, args: tuple, output) -> tuple[torch.Tensor, Routing]:
        """The experts' call carries the chosen ids and weights; the logits are the router's linear map of the
        same input, recomputed (harvests keep them with --keep-router-logits)."""
        hidden, ids_TK, weights_TK = args[:3]
        hidden_TD = hidden.reshape(-1, hidden.shape[-1])
        logits_TE = F.linear(hidden_TD, self.router(layer).layer.weight)
        return hidden_TD, Routing(ids_TK, weights_TK, logits_TE)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        logits_TE = F.linear(hidden_TD, self.router(layer).layer.weight)
        return F.softmax(logits_TE, dim=1, dtype=logits_TE.dtype)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).layer.weight)
        probs_TE = F.softmax(logits_TE, dim=1, dtype=logits_TE.dtype)
        weights_TK, ids_TK = torch.topk(probs_TE, self.top_k, dim=-1)
        p = self.config.ffn_config.moe_normalize_expert_weights
        if p is not None:
            weights_TK = weights_TK / torch.norm(weights_TK, p=p, dim=-1, keepdim=True)
        return Routing(ids_TK, weights_TK, logits_TE)
