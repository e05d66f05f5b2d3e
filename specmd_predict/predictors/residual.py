"""(d) Router-initialized residual MLP: router reuse plus a learned correction, starting exactly at router reuse.

    predictor = ResidualRouterPredictor.from_adapter(adapter, horizon=3, rank=64, depth=2)
    probs_THE = predictor.predict(layer, hidden_TD)   # at init: equal to RouterReusePredictor's

Per source layer l: logits for layer l+h = hidden_TD @ W_{l+h}^T + MLP_l(hidden_TD)[h], where W_{l+h} starts
as the real router weight of layer l+h (trainable unless `train_router=False`) and the MLP (`depth` hidden layers
of width `rank`) has its last layer starting at zero. It needs a linear router whose logits rank the experts as the
family's selection scores do (a softmax of them: OLMoE, Mixtral, Qwen-MoE; or top-k on the raw logits: Granite), so
that starting there picks exactly router reuse's experts. `router_fits_residual(adapter)` says whether a model
qualifies, and why not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.predictors.base import RankedPredictor


class ResidualRouterPredictor(RankedPredictor):
    kind = "residual"

    def __init__(
        self,
        identity: dict,
        horizon: int = 3,
        rank: int = 64,
        dropout: float = 0.0,
        train_router: bool = True,
        depth: int = 1,
    ):
        super().__init__(identity, horizon, rank, dropout, depth)
        self.train_router = bool(train_router)
        self.corrections = nn.ModuleList()
        for l in range(self.num_layers):
            num_ahead = max(self.horizon_at(l), 1)
            router_HED = torch.zeros(num_ahead, self.num_experts, self.hidden_size)
            if self.train_router:
                self.register_parameter(f"router_{l}_HED", nn.Parameter(router_HED))
            else:
                self.register_buffer(f"router_{l}_HED", router_HED)
            mlp = self.rank_mlp(num_ahead * self.num_experts)
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)
            self.corrections.append(mlp)

    @classmethod
    def from_adapter(cls, adapter: MoEAdapter, horizon: int = 3, **hparams) -> ResidualRouterPredictor:
        """Copy the later routers' weights in, so the predictor starts exactly at router reuse."""
        predictor = cls(adapter.identity(), horizon, **hparams)
        with torch.no_grad():
            for l in range(predictor.num_layers):
                for h in range(1, predictor.horizon_at(l) + 1):
                    getattr(predictor, f"router_{l}_HED")[h - 1].copy_(_linear_router_weight(adapter, l + h))
        return predictor

    def hparams(self) -> dict:
        return super().hparams() | {"train_router": self.train_router}

    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        num_ahead = self.horizon_at(layer)
        if num_ahead == 0:
            return self._empty(hidden_TD)
        router_HED = getattr(self, f"router_{layer}_HED")
        reuse_THE = torch.einsum("td,hed->the", hidden_TD, router_HED)
        correction_THE = self.corrections[layer](hidden_TD).view(hidden_TD.shape[0], num_ahead, self.num_experts)
        return reuse_THE + correction_THE


def router_fits_residual(adapter: MoEAdapter) -> str | None:
    """None when every MoE layer's router suits the residual kind, else the one-line reason it does not."""
    try:
        for layer in range(adapter.num_layers):
            _linear_router_weight(adapter, layer)
    except ValueError as err:
        return str(err)
    return None


def _linear_router_weight(adapter: MoEAdapter, layer: int) -> torch.Tensor:
    """Layer `layer`'s router weight [E, D], checked to rank experts as the adapter's selection scores do.

    The residual kind's probabilities are a softmax of its logits, so it reproduces router reuse's choices
    whenever the selection scores are a strictly increasing function of the linear logits (softmax, raw
    logits); a bias or a grouped selection (DeepSeek-V3) breaks that and the check fails.
    """
    if adapter.hash_table(layer) is not None:
        raise ValueError(
            f"MoE layer {layer} of this {adapter.model_type} model is hash-routed (its experts follow from the token "
            "id, not from a router's logits)"
        )
    weight_ED = getattr(adapter.router(layer), "weight", None)
    if weight_ED is None or tuple(weight_ED.shape) != (adapter.num_experts, adapter.hidden_size):
        raise ValueError(
            f"the residual predictor needs a linear router [E, D]; {adapter.model_type} layer {layer} has "
            f"{type(adapter.router(layer)).__name__}"
        )
    probe_TD = torch.randn(16, adapter.hidden_size, generator=torch.Generator().manual_seed(0)).to(weight_ED)
    with torch.no_grad():
        scores_TE = adapter.selection_scores(layer, probe_TD).float()
        logits_TE = F.linear(probe_TD, weight_ED).float()
    if scores_TE.shape != logits_TE.shape or not torch.equal(scores_TE.argsort(-1), logits_TE.argsort(-1)):
        raise ValueError(
            f"{adapter.model_type}'s selection scores do not rank experts as its linear router's logits do"
        )
    return weight_ED.detach().float().cpu()
