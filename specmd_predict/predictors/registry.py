"""Predictor kinds by name, and one factory that builds any of them.

    predictor = make_predictor("residual", adapter=adapter, horizon=3, rank=64)
    predictor = make_predictor("linear", identity=adapter.identity(), horizon=3)

Kinds: linear (b), lowrank (c), residual (d, router-initialized; needs `adapter`), shared (e), routing (f,
routing-only: predicts from expert ids, `predict_routing`), frequency
(baseline; fill it with `FrequencyPredictor.from_dataset`). Router reuse is not here: it needs the live
model and is built directly with `RouterReusePredictor(adapter, horizon)`.
"""

from __future__ import annotations

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.lookup import lookup
from specmd_predict.predictors.base import ExpertPredictor
from specmd_predict.predictors.frequency import FrequencyPredictor
from specmd_predict.predictors.linear import LinearPredictor
from specmd_predict.predictors.lowrank import LowRankPredictor
from specmd_predict.predictors.residual import ResidualRouterPredictor
from specmd_predict.predictors.routing_only import RoutingOnlyPredictor
from specmd_predict.predictors.shared import SharedPredictor

PREDICTOR_KINDS: dict[str, type[ExpertPredictor]] = {
    cls.kind: cls
    for cls in (
        LinearPredictor,
        LowRankPredictor,
        ResidualRouterPredictor,
        SharedPredictor,
        FrequencyPredictor,
        RoutingOnlyPredictor,
    )
}


def predictor_class(kind: str) -> type[ExpertPredictor]:
    """The class registered under `kind`; a clear error with a suggestion for an unknown name."""
    return lookup(PREDICTOR_KINDS, kind, "predictor kind")


def make_predictor(
    kind: str, *, adapter: MoEAdapter | None = None, identity: dict | None = None, horizon: int = 3, **hparams
) -> ExpertPredictor:
    """A fresh predictor of `kind` for the model of `adapter` (or of `identity` when no model is at hand)."""
    cls = predictor_class(kind)
    if cls is ResidualRouterPredictor:
        if adapter is None:
            raise ValueError("the residual predictor starts from the model's routers: pass adapter=")
        return cls.from_adapter(adapter, horizon, **hparams)
    if identity is None:
        if adapter is None:
            raise ValueError("pass adapter= or identity= to build a predictor")
        identity = adapter.identity()
    return cls(identity, horizon, **hparams)
