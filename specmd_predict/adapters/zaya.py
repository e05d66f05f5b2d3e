"""ZAYA1 (Zyphra/ZAYA1): an MLP router that also reads the previous layer's router state, top-1 with a skip class.

Every decoder layer's `mlp` is an MoE block whose router `gate` (ZayaRouter) computes, for MoE layer l:
1. router state r_l = down_proj(hidden) + r_{l-1} * `router_states_scale` (layers l > 0: "EDA", the previous
   router's state, passed along the decoder; layer 0 has none);
2. logits = router_mlp(r_l) (RMS norm, two GELU layers, out_proj) over E experts + 1 skip class;
   probs = softmax(logits); the choice is top-k (k = 1 in every ZAYA config) over fp32 probs + `balancing_biases`;
   the weight is the chosen class's unbiased prob;
3. a chosen skip class (id E) becomes expert 0 with weight 0: the experts module still runs expert 0 for it,
   so the runtime loads it too. `selection_scores` puts the skip class's score on expert 0 accordingly.

So routing reads r_{l-1} besides the hidden state: `route` / `selection_scores` take it (`router_states_TR`), or
use the states `watch_routing_inputs` kept as the model ran (r_{l-1} itself when router l-1 ran in this forward,
which is exact). Otherwise, e.g. a later layer predicted early by router reuse, the missing states are recomputed
by running the routers in between on the given hidden state (from the latest watched one, or from layer 0).
"""

from __future__ import annotations

import torch
from torch import nn

from specmd_predict.adapters.base import MoEAdapter, RoutingWatch
from specmd_predict.routing import Routing


class ZayaAdapter(MoEAdapter):
    model_type = "zaya"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._watched_TR: dict[int, torch.Tensor] = {}  # MoE layer -> its router state in the latest forward
        self._latest = -1  # the MoE layer whose router ran last (routers run in order within a pass)

    @property
    def num_experts(self) -> int:
        return self.config.num_experts  # the router scores one more class: skip

    @property
    def renormalize(self) -> bool:
        return False

    def watch_routing_inputs(self) -> RoutingWatch:
        def see(layer: int):
            def hook(module: nn.Module, args: tuple, output) -> None:
                state = output[3]
                self._watched_TR[layer] = state.reshape(-1, state.shape[-1])
                self._latest = layer

            return hook

        handles = [self.router(layer).register_forward_hook(see(layer)) for layer in range(self.num_layers)]
        return RoutingWatch([*super().watch_routing_inputs().handles, *handles])

    def _state(self, layer: int, hidden_TD: torch.Tensor, previous_TR: torch.Tensor | None) -> torch.Tensor:
        """Router state r_layer for `hidden_TD`, given r_{layer-1} (None for layer 0)."""
        router = self.router(layer)
        state_TR = router.down_proj(hidden_TD.to(router.down_proj.weight.dtype))
        if router.use_eda and previous_TR is not None:
            state_TR = state_TR + previous_TR * router.router_states_scale
        return state_TR

    def _previous_state(self, layer: int, hidden_TD: torch.Tensor, router_states_TR: torch.Tensor | None):
        """r_{layer-1}: given, watched in this forward, or recomputed from the latest watched state on `hidden_TD`."""
        if layer == 0 or router_states_TR is not None:
            return router_states_TR
        num_tokens = hidden_TD.shape[0]
        start = min(self._latest, layer - 1)
        watched = self._watched_TR.get(start)
        state_TR = watched if watched is not None and watched.shape[0] == num_tokens else None
        if state_TR is None:
            start = -1
        for j in range(start + 1, layer):
            state_TR = self._state(j, hidden_TD, state_TR)
        return state_TR

    def _probs(self, layer: int, hidden_TD: torch.Tensor, router_states_TR: torch.Tensor | None):
        """(logits [T, E+1], probs [T, E+1]) of layer `layer`'s router."""
        previous_TR = self._previous_state(layer, hidden_TD, router_states_TR)
        logits_TC = self.router(layer).router_mlp(self._state(layer, hidden_TD, previous_TR))
        return logits_TC, torch.softmax(logits_TC, dim=-1)

    def selection_scores(
        self, layer: int, hidden_TD: torch.Tensor, router_states_TR: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Biased probs of the E experts; expert 0 scores the better of itself and the skip class (which runs it)."""
        choice_TC = self._probs(layer, hidden_TD, router_states_TR)[1].float() + self.router(layer).balancing_biases
        choice_TE, skip_T = choice_TC[:, : self.num_experts], choice_TC[:, self.num_experts]
        return torch.cat([torch.maximum(choice_TE[:, :1], skip_T[:, None]), choice_TE[:, 1:]], dim=-1)

    def route(self, layer: int, hidden_TD: torch.Tensor, router_states_TR: torch.Tensor | None = None) -> Routing:
        logits_TC, probs_TC = self._probs(layer, hidden_TD, router_states_TR)
        choice_TC = probs_TC.float() + self.router(layer).balancing_biases
        ids_TK = torch.topk(choice_TC, self.top_k, dim=-1).indices
        weights_TK = probs_TC.gather(1, ids_TK)
        skip_TK = ids_TK == self.num_experts
        return Routing(ids_TK.masked_fill(skip_TK, 0), weights_TK.masked_fill(skip_TK, 0), logits_TC)

    def routing_from_router_output(self, output) -> Routing:
        """The router returns (logits, weights, ids, its state for the next layer): the state is not routing."""
        return super().routing_from_router_output(output[:3])
