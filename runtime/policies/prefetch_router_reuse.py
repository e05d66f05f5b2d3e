"""Router-reuse prefetch: apply the next layers' routers to this layer's hidden state, take top-k x overfetch.

    make_prefetch("router-reuse", predictor=RouterReusePredictor(adapter, horizon=2), top_k=8, overfetch=1.5)
    make_prefetch("router-reuse", predictor=RouterReusePredictor(adapter, horizon=3), top_k=8, layers_ahead=3)

Each token's round(top_k * overfetch) most likely experts of each of the next `layers_ahead` layers (default
1; the shared `horizon` context keyword of a grid does not change it) are proposed (their union over the
tokens), nearest layer first; from the last MoE layer, the next pass's first layer when the predictor
`predicts_next_pass`. `predictor` is any `.predict(layer, hidden_TD) -> [T, H_eff, E]` object.
"""

from __future__ import annotations

from runtime.policies.prefetch_predictor import PredictorPrefetch


class RouterReusePrefetch(PredictorPrefetch):
    name = "router-reuse"

    def __init__(self, predictor=None, top_k: int = 1, overfetch: float = 1.0, layers_ahead: int = 1) -> None:
        if not overfetch > 0:
            raise ValueError(f"router-reuse overfetch must be > 0, got {overfetch}")
        super().__init__(predictor, horizon=layers_ahead, top_k=max(1, round(top_k * overfetch)))
        self.overfetch = overfetch
