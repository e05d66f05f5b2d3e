"""Router-reuse prefetch: apply the next layer's router to this layer's hidden state, take top-k x overfetch.

    make_prefetch("router-reuse", predictor=RouterReusePredictor(adapter, horizon=1), top_k=8, overfetch=1.5)

Each token's round(top_k * overfetch) most likely next-layer experts are proposed (their union over the
tokens). `predictor` is any `.predict(layer, hidden_TD) -> [T, H_eff, E]` object; only horizon 1 is used.
"""

from __future__ import annotations

from runtime.policies.prefetch_predictor import PredictorPrefetch


class RouterReusePrefetch(PredictorPrefetch):
    name = "router-reuse"

    def __init__(self, predictor=None, top_k: int = 1, overfetch: float = 1.0) -> None:
        if overfetch <= 0:
            raise ValueError(f"router-reuse overfetch must be > 0, got {overfetch}")
        super().__init__(predictor, horizon=1, top_k=max(1, round(top_k * overfetch)))
        self.overfetch = overfetch
