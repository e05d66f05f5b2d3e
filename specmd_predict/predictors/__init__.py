"""Expert predictors: given MoE layer l's router input, the probability that each expert is chosen at l+1..l+H.

    from specmd_predict.predictors import RouterReusePredictor, load_predictors
    reuse = RouterReusePredictor(adapter, horizon=3)       # training-free baseline
    bank = load_predictors("outputs/banks/embedded")       # a trained bank (specmd-train), no Lightning
    bank.check_model(adapter)
    probs_THE = bank.predict(layer, hidden_TD)             # [T, H_eff, E] in [0, 1]

Files: base.py (interface, probability rule), router_reuse.py, frequency.py, linear.py, lowrank.py,
residual.py, shared.py (the kinds), registry.py (kinds by name), bank.py (directory format), metrics.py.
Plain nn.Modules: importing this package pulls in neither Lightning nor wandb.
"""

from specmd_predict.predictors.bank import (
    FORMAT_VERSION,
    BankError,
    check_model,
    load_predictors,
    read_bank_config,
    save_bank,
    verify_bank,
)
from specmd_predict.predictors.base import ExpertPredictor, check_horizon, selection_probs
from specmd_predict.predictors.frequency import FrequencyPredictor
from specmd_predict.predictors.linear import LinearPredictor
from specmd_predict.predictors.lowrank import LowRankPredictor
from specmd_predict.predictors.metrics import recall_at_k, topk_hits
from specmd_predict.predictors.registry import PREDICTOR_KINDS, make_predictor, predictor_class
from specmd_predict.predictors.residual import ResidualRouterPredictor
from specmd_predict.predictors.router_reuse import RouterReusePredictor
from specmd_predict.predictors.shared import SharedPredictor

__all__ = [
    "FORMAT_VERSION",
    "PREDICTOR_KINDS",
    "BankError",
    "ExpertPredictor",
    "FrequencyPredictor",
    "LinearPredictor",
    "LowRankPredictor",
    "ResidualRouterPredictor",
    "RouterReusePredictor",
    "SharedPredictor",
    "check_horizon",
    "check_model",
    "load_predictors",
    "make_predictor",
    "predictor_class",
    "read_bank_config",
    "recall_at_k",
    "save_bank",
    "verify_bank",
    "selection_probs",
    "topk_hits",
]
