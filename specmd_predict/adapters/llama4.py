"""Llama 4 (meta-llama/Llama-4-Scout-17B-16E, -Maverick-17B-128E; text config `llama4_text`): top-k logits, sigmoid.

The router (an nn.Linear at `feed_forward.router`) takes the top-k logits; each chosen expert's weight is the
sigmoid of its own logit (not normalized over the k; Llama 4 scales the expert's *input* by it). Decoder
layers listed in `moe_layers` hold a `feed_forward` MoE block (Maverick interleaves dense and MoE layers);
each block has a `shared_expert` every token uses (always resident). Experts are stacked
`gate_up_proj [E, D, 2I]`, `down_proj [E, I, D]`.

The router returns (scores [T, E] with 0 outside the top-k, logits) rather than (logits, weights, ids),
so `routing_from_router_output` reads the chosen experts back from the scores. In transformers 5.24 the
experts module runs every expert on every token (unchosen ones with input scaled by 0) and is not
registered with the experts-implementation hooks, so offloading it needs more than this adapter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class Llama4Adapter(MoEAdapter):
    model_type = "llama4_text"
    moe_block_attr = "feed_forward"
    router_attr = "router"
    shared_experts_attr = "shared_expert"

    @property
    def renormalize(self) -> bool:
        return False

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD, self.router(layer).weight)

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        logits_TE = F.linear(hidden_TD, self.router(layer).weight)
        top_logits_TK, ids_TK = torch.topk(logits_TE, self.top_k, dim=1)
        weights_TK = torch.sigmoid(top_logits_TK.float()).to(logits_TE.dtype)
        return Routing(ids_TK, weights_TK, logits_TE)

    def routing_from_router_output(self, output) -> Routing:
        scores_TE, logits_TE = output
        # chosen experts score sigmoid(logit) > 0, all others sigmoid(-inf) = 0: the k largest scores
        weights_TK, ids_TK = torch.topk(scores_TE, self.top_k, dim=1)
        return Routing(ids_TK, weights_TK, logits_TE)
