"""Router reuse (training-free): layer l+h's real router applied to layer l's router input.

    predictor = RouterReusePredictor(adapter, horizon=3)
    probs_THE = predictor.predict(layer, hidden_TD)          # [T, H_eff, E]
    probs_TE = predictor.predict_next_pass(hidden_TD)        # the next pass's first MoE layer, from the last one

The residual stream changes little from one layer to the next, so the next routers, run early, already
guess most of their own choices; from the last MoE layer, layer 0's router guesses the next token's first
MoE layer (`predicts_next_pass`). It needs the live model (through its adapter) and is never
saved in a bank. It runs on the decode path: the only device-to-host read is the one-time check of the
routers' kind at the first call (`_distribution`; in the runtime that is offload()'s dry run).
"""

from __future__ import annotations

import torch

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.predictors.base import ExpertPredictor


def is_distribution(scores_TE: torch.Tensor) -> torch.Tensor:
    """0-dim bool tensor on the scores' device: every row is non-negative and sums to 1 (a softmax router)."""
    scores_TE = scores_TE.float()
    return (scores_TE >= 0).all() & ((scores_TE.sum(-1) - 1.0).abs() <= 1e-3 + 1e-5).all()


def selection_probs_from_scores(
    scores_TE: torch.Tensor, top_k: int, distribution: torch.Tensor | bool | None = None
) -> torch.Tensor:
    """Map an adapter's selection scores to [0, 1] selection probabilities, order preserved.

    Scores that are a distribution over E (softmax routers) become 1 - (1 - q)^K, the same rule as the
    learned predictors, so the two are comparable; other scores (e.g. sigmoid or raw) go through a softmax first.
    The choice is made on the device (torch.where), never by reading a flag back to the host; `distribution`
    passes a flag already computed for this router family (`is_distribution`), or as a Python bool where reading
    it cost nothing (CPU): then only the branch taken is computed.
    """
    if scores_TE.dtype != torch.float32:
        scores_TE = scores_TE.float()
    if distribution is None:
        distribution = is_distribution(scores_TE)
    if isinstance(distribution, bool):
        q_TE = scores_TE if distribution else torch.softmax(scores_TE, dim=-1)
    else:
        q_TE = torch.where(distribution, scores_TE, torch.softmax(scores_TE, dim=-1))
    # 1 - (1 - q)^K in three kernels (the decode path runs this at every layer): rsub makes the one fresh tensor,
    # the power is taken in place. Equal to the learned predictors' -expm1(K log1p(-q)) up to float32 rounding
    # (below q ~ 1e-7, where 1 - q rounds to 1, it gives 0 instead of ~K q: nothing a prefetch would pick).
    return torch.rsub(torch.rsub(q_TE, 1.0).pow_(top_k), 1.0)


class RouterReusePredictor(ExpertPredictor):
    kind = "router-reuse"

    def __init__(self, adapter: MoEAdapter, horizon: int = 3):
        super().__init__(adapter.identity(), horizon)
        self.adapter = adapter
        self._next_pass = 0 not in adapter.hash_routed_layers
        # each router module (kept: `offload` moves their parameters to the device by replacing them, so a
        # parameter is looked up at each call; not always a `.weight`: Zaya's router is an MLP)
        self._routers = [adapter.router(layer) for layer in range(adapter.num_layers)]
        self._is_distribution: bool | None = None

    @property
    def predicts_next_pass(self) -> bool:
        """Layer 0's router on the last layer's input; not where layer 0 is hash-routed (DeepSeek-V4): its experts
        follow the next token, unknown until this pass ends."""
        return self._next_pass

    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """Log selection scores of the later routers (a softmax of them gives back the scores)."""
        return torch.log(self._scores(layer, hidden_TD).clamp(min=1e-30))

    def predict(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # no graph; the runtime calls it under no_grad already (no switch per layer)
            with torch.no_grad():
                return self.predict(layer, hidden_TD)
        scores_THE = self._scores(layer, hidden_TD)
        return selection_probs_from_scores(scores_THE, self.top_k, self._distribution(scores_THE))

    def predict_next_pass(self, hidden_TD: torch.Tensor) -> torch.Tensor:
        """[T, E]: MoE layer 0's router applied to the last MoE layer's router input (the next pass's guess)."""
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.predict_next_pass(hidden_TD)
        scores_TE = self.adapter.selection_scores(0, self._on_router(0, hidden_TD))
        return selection_probs_from_scores(scores_TE, self.top_k, self._distribution(scores_TE))

    def predict_top(
        self, layer: int, hidden_TD: torch.Tensor, layers: list[int], k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q_RK float32, ids_RK int64) for ONE token at MoE layer `layer`: per router of `layers` (later layers, or
        0 for the next pass) applied to its router input, the k highest selection scores q (descending) and their
        expert ids. `probability_of_score(q)` gives the probability `predict` would: the map is increasing, so these
        are `predict`'s top-k, found in a few kernels (the decode prefetch path). Two tensors, not one packed: no
        cast and no stack kernel on the decode path (the runtime copies both back before its one wait)."""
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.predict_top(layer, hidden_TD, layers, k)
        hidden_TD = self._on_router(layer, hidden_TD)
        selection_scores = self.adapter.selection_scores
        if len(layers) == 1:
            scores_RE = selection_scores(layers[0], hidden_TD)
        else:
            scores_RE = torch.cat([selection_scores(target, hidden_TD) for target in layers])
        if scores_RE.dtype != torch.float32:
            scores_RE = scores_RE.float()
        if not self._distribution(scores_RE):  # as in selection_probs_from_scores: raw scores -> a distribution
            scores_RE = torch.softmax(scores_RE, dim=-1)
        return scores_RE.topk(k, dim=-1)

    def probability_of_score(self, q: float) -> float:
        """`predict_top`'s score q (a selection share in [0, 1]) -> the selection probability 1 - (1 - q)^K."""
        return 1.0 - (1.0 - q) ** self.top_k

    def _distribution(self, scores: torch.Tensor) -> bool | None:
        """Whether this model's routers give distributions: decided from the first scores that have a row, then
        reused (one family's routers all score the same way), as a Python bool so that every later call computes
        only the branch taken. On a GPU that is one device-to-host read, once: in the runtime the first call is
        `offload()`'s dry run, before any decoding."""
        if self._is_distribution is None and scores.numel() > 0:
            self._is_distribution = bool(is_distribution(scores.reshape(-1, scores.shape[-1])))
        return self._is_distribution

    def _scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        num_ahead = self.horizon_at(layer)
        if num_ahead == 0:
            return self._empty(hidden_TD)
        hidden_TD = self._on_router(layer, hidden_TD)
        if num_ahead == 1:  # the common case (one layer ahead): no stack of one
            scores_TE = self.adapter.selection_scores(layer + 1, hidden_TD)
            return (scores_TE if scores_TE.dtype == torch.float32 else scores_TE.float()).unsqueeze(1)
        return torch.stack(
            [self.adapter.selection_scores(layer + h, hidden_TD).float() for h in range(1, num_ahead + 1)], dim=1
        )

    def _on_router(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        router_param = self._router_param(layer)
        if hidden_TD.dtype == router_param.dtype and hidden_TD.device == router_param.device:
            return hidden_TD  # the usual case: the router's own input (no call into .to on the decode path)
        return hidden_TD.to(device=router_param.device, dtype=router_param.dtype)

    def _router_param(self, layer: int) -> torch.Tensor:
        """Where and in what dtype layer `layer`'s router computes: its first parameter, now (not one cached
        at construction, which `offload` replaces when it moves the router)."""
        router = self._routers[layer]
        for param in router._parameters.values():  # a linear router: its own weight, without a generator walk
            if param is not None:
                return param
        return next(router.parameters())
