"""Predictor-driven prefetch: a predictor bank's top-k or probability threshold, 1..H layers ahead.

    make_prefetch("predictor", predictor=load_predictors(bank_dir), horizon=2, top_k=4)        # per-token top-k
    make_prefetch("predictor", predictor=bank, horizon=3, threshold=0.3)                     # or a threshold

`predictor` is any object with `.predict(layer, hidden_TD) -> [T, H_eff, E]` probabilities (the interface of
`specmd_predict/predictors/base.py`). An expert's score is the probability that at least one of the T tokens
selects it, 1 - prod_t(1 - p_t). After each `propose`, `self.probabilities` holds the scores of every expert of the
predicted layers (not only the chosen ones); the driver forwards them with `cache.predictions()` so that
predicted-next-use evictors see them. Candidates come nearest layer first, best score first within a layer.
"""

from __future__ import annotations

import torch

from specmd_predict.policies import PrefetchPolicy
from specmd_predict.routing import ExpertKey, Routing


def any_token_probability(probs_TE: torch.Tensor) -> torch.Tensor:
    """[T, E] per-token probabilities -> [E] probability that at least one token selects each expert."""
    probs_TE = probs_TE.float().clamp(0.0, 1.0)
    return 1.0 - torch.exp(torch.log1p(-probs_TE.clamp(max=1 - 1e-7)).sum(dim=0))


class PredictorPrefetch(PrefetchPolicy):
    name = "predictor"

    def __init__(
        self, predictor=None, horizon: int = 1, top_k: int | None = None, threshold: float | None = None
    ) -> None:
        if predictor is None:
            raise ValueError(f"prefetch {self.name!r} needs predictor=<object with .predict(layer, hidden_TD)>")
        if (top_k is None) == (threshold is None) and type(self) is PredictorPrefetch:
            raise ValueError("prefetch 'predictor' takes exactly one of top_k=<int> or threshold=<probability>")
        if horizon < 1:
            raise ValueError(f"prefetch horizon must be >= 1 layer ahead, got {horizon}")
        self.predictor = predictor
        self.horizon = horizon
        self.top_k = top_k
        self.threshold = threshold
        self.probabilities: dict[ExpertKey, float] = {}

    def _predict(self, layer: int, hidden_TD: torch.Tensor | None) -> torch.Tensor | None:
        """[T, H_eff, E] probabilities for layers layer+1.., cut to this policy's horizon; None if nothing."""
        self.probabilities = {}
        if hidden_TD is None:
            return None
        with torch.no_grad():
            probs_THE = self.predictor.predict(layer, hidden_TD)
        probs_THE = probs_THE[:, : self.horizon]
        if probs_THE.shape[1] == 0:
            return None
        return probs_THE

    def _select(self, probs_TE: torch.Tensor, any_E: torch.Tensor) -> list[int]:
        if self.threshold is not None:
            return (any_E >= self.threshold).nonzero().flatten().tolist()
        k = min(self.top_k, probs_TE.shape[-1])
        return probs_TE.topk(k, dim=-1).indices.unique().tolist()

    def propose(self, layer: int, hidden_TD: torch.Tensor | None, routing: Routing) -> list[tuple[ExpertKey, float]]:
        probs_THE = self._predict(layer, hidden_TD)
        if probs_THE is None:
            return []
        out: list[tuple[ExpertKey, float]] = []
        for h in range(probs_THE.shape[1]):
            target = layer + 1 + h
            probs_TE = probs_THE[:, h]
            any_E = any_token_probability(probs_TE)
            scores = any_E.tolist()
            self.probabilities.update({ExpertKey(target, e): p for e, p in enumerate(scores)})
            chosen = sorted(self._select(probs_TE, any_E), key=lambda e: -scores[e])
            out.extend((ExpertKey(target, e), scores[e]) for e in chosen)
        return out
