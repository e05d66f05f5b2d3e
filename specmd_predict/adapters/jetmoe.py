"""JetMoE (jetmoe-ai/jetmoe-8b): top-k over fp32 logits, softmax over the chosen k, cast to the hidden dtype.

Granite MoE's rule, but JetMoE's MLP block (`mlp`, a JetMoeMoE) has no `experts` module: its experts are the
two stacked matrices `input_linear.weight` [E, 2I, D] and `output_linear.weight` [E, D, I], which
`experts(layer)` shows as one view module (same storage). Its router (`mlp.router`, JetMoeTopKGating) returns the
choice grouped by expert (sorted positions, gates, tokens per expert, logits); `routing_from_router_output`
puts it back per token. JetMoE's attention is a mixture of experts too (JetMoeMoA, `self_attention.experts`):
those stay resident, only the MLP experts are cached, and the runtime (which drives an experts module called
with the routed ids) refuses JetMoE in one line.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class JetMoeStackedExperts(nn.Module):
    """A read-only view of one MoE block's two expert matrices (no copy, not part of the model)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        for name in ("input_linear", "output_linear"):
            self.register_buffer(name, getattr(block, name).weight, persistent=False)


class JetMoeAdapter(MoEAdapter):
    model_type = "jetmoe"
    router_attr = "router"

    def __init__(self, model):
        super().__init__(model)
        self._stacked = [JetMoeStackedExperts(block) for block in self.moe_blocks]

    def is_moe_block(self, block: nn.Module) -> bool:
        return hasattr(block, "router") and hasattr(block, "input_linear")

    @property
    def num_experts(self) -> int:
        return self.router(0).layer.weight.shape[0]

    @property
    def renormalize(self) -> bool:
        return True

    def experts(self, layer: int) -> nn.Module:
        return self._stacked[layer]

    def routing_from_router_output(self, output) -> Routing:
        """(sorted flat positions, token of each, gate of each, tokens per expert, logits) -> per-token ids."""
        index_sorted, _, gates_sorted, expert_size, logits_TE = output
        num_tokens = logits_TE.shape[0]
        device = logits_TE.device
        experts_sorted = torch.repeat_interleave(
            torch.arange(self.num_experts, device=device), torch.as_tensor(expert_size, device=device)
        )
        ids_flat = torch.empty(num_tokens * self.top_k, dtype=torch.long, device=device)
        weights_flat = torch.empty(num_tokens * self.top_k, dtype=gates_sorted.dtype, device=device)
        ids_flat[index_sorted] = experts_sorted
        weights_flat[index_sorted] = gates_sorted
        return Routing(ids_flat.view(num_tokens, -1), weights_flat.view(num_tokens, -1), logits_TE)

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD, self.router(layer).layer.weight).float()

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).layer.weight).float()
        top_logits_TK, ids_TK = logits_TE.topk(self.top_k, dim=1)
        return Routing(ids_TK, torch.softmax(top_logits_TK, dim=1).type_as(hidden_TD), logits_TE)
