"""specmd-predict: learned expert prediction and Least-Stale caching for offloaded MoE inference.

Public API (the shared core every other package builds on):

    from specmd_predict import get_adapter, load_embedded_model, record_routing
    model, tokenizer = load_embedded_model()
    adapter = get_adapter(model)             # one adapter per model family, by config.model_type
    bank = load_predictors("outputs/banks/embedded-residual")   # trained by specmd-train
    probs_THE = bank.predict(layer, hidden_TD)                   # experts at layers l+1..l+H
"""

from specmd_predict.adapters import MoEAdapter, UnsupportedModelError, get_adapter, supported_model_types
from specmd_predict.capture import record_routing
from specmd_predict.embedded import EMBEDDED_MODEL_DIR, load_embedded_model
from specmd_predict.policies import EvictionPolicy, PrefetchPolicy
from specmd_predict.predictors import (
    BankError,
    ExpertPredictor,
    FrequencyPredictor,
    RouterReusePredictor,
    load_predictors,
    make_predictor,
    recall_at_k,
    save_bank,
)
from specmd_predict.routing import ExpertKey, Routing

__all__ = [
    "EMBEDDED_MODEL_DIR",
    "BankError",
    "ExpertPredictor",
    "FrequencyPredictor",
    "RouterReusePredictor",
    "load_predictors",
    "make_predictor",
    "recall_at_k",
    "save_bank",
    "EvictionPolicy",
    "ExpertKey",
    "MoEAdapter",
    "PrefetchPolicy",
    "Routing",
    "UnsupportedModelError",
    "get_adapter",
    "load_embedded_model",
    "record_routing",
    "supported_model_types",
]
