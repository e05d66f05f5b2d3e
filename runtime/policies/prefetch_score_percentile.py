"""Score-percentile prefetch: the experts of the next layer(s) whose predicted score is above a percentile.

    make_prefetch("score-percentile", predictor=RouterReusePredictor(adapter, horizon=1), percentile=80)

Scores are the any-token probabilities of `PredictorPrefetch`; with E experts per layer, roughly the top
(100 - percentile)% of each predicted layer is proposed (strictly above the percentile value).
"""

from __future__ import annotations

import torch

from runtime.policies.prefetch_predictor import PredictorPrefetch


class ScorePercentilePrefetch(PredictorPrefetch):
    name = "score-percentile"

    def __init__(self, predictor=None, percentile: float = 80.0, horizon: int = 1) -> None:
        if not 0.0 <= percentile < 100.0:
            raise ValueError(f"score-percentile needs 0 <= percentile < 100, got {percentile}")
        super().__init__(predictor, horizon=horizon)
        self.percentile = percentile

    def _chosen(self, probs_TE: torch.Tensor, any_E: torch.Tensor) -> torch.Tensor:
        return any_E > torch.quantile(any_E, self.percentile / 100.0)
