"""Inkling text model (inkling_text): a biased sigmoid choice; weights normalized with the shared experts' ones.

The router (`mlp.gate`, InklingTopkRouter) holds E routed rows and then `n_shared_experts` shared rows. In fp32:
1. the choice is top-k over sigmoid(routed logits) + `e_score_correction_bias`;
2. the weights: logsigmoid of the k chosen routed logits and of the shared logits, normalized together (a softmax
   over those k + n_shared log-probabilities), times `route_scale` and the learned `global_scale`, in the input's
   dtype. The first k are the routed experts' weights; the last n_shared (the shared experts' "gammas") weight the
   always-resident shared experts, so they are not part of the Routing.
Decoder layers whose `mlp_layer_types` entry is "dense" hold a plain MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


class InklingAdapter(MoEAdapter):
    model_type = "inkling_text"
    shared_experts_attr = "shared_experts"

    @property
    def num_experts(self) -> int:
        return self.config.n_routed_experts  # the router's last n_shared_experts rows are the shared experts'

    @property
    def renormalize(self) -> bool:
        return False  # the k routed weights share their normalization with the shared experts': no fixed sum

    def _routed_logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_TD.float(), self.router(layer).weight.float())[:, : self.num_experts]

    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return self._routed_logits(layer, hidden_TD).sigmoid() + self.router(layer).e_score_correction_bias.float()

    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        router = self.router(layer)
        logits_TS = F.linear(hidden_TD.float(), router.weight.float())  # S = E routed + n_shared rows
        logits_TE, shared_TN = logits_TS[:, : self.num_experts], logits_TS[:, self.num_experts :]
        choice_TE = logits_TE.sigmoid() + router.e_score_correction_bias.float()
        ids_TK = torch.topk(choice_TE, self.top_k, dim=-1, sorted=False).indices
        log_probs_TX = F.logsigmoid(torch.cat([logits_TE.gather(1, ids_TK), shared_TN], dim=-1))
        weights_TX = torch.exp(log_probs_TX - torch.logsumexp(log_probs_TX, dim=-1, keepdim=True))
        weights_TX = weights_TX * router.route_scale * router.global_scale.float()
        return Routing(ids_TK, weights_TX[:, : self.top_k].to(hidden_TD.dtype), logits_TE)

    def routing_from_router_output(self, output) -> Routing:
        """The router returns (routed logits, routed weights, ids, shared gammas): the gammas are not routing."""
        return super().routing_from_router_output(output[:3])
