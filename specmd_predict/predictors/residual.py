"""(d) Router-initialized residual MLP: router reuse plus a learned correction, starting exactly at router reuse.

    predictor = ResidualRouterPredictor.from_adapter(adapter, horizon=3, rank=64)
    probs_THE = predictor.predict(layer, hidden_TD)   # at init: equal to RouterReusePredictor's

Per source layer l: logits for layer l+h = hidden_TD @ W_{l+h}^T + MLP_l(hidden_TD)[h], where W_{l+h} starts
as the real router weight of layer l+h (trainable unless `train_router=False`) and the MLP's last layer
starts at zero. It needs a linear router whose softmax gives the selection scores (OLMoE, Mixtral, Qwen-MoE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.predictors.base import ExpertPredictor


class ResidualRouterPredictor(ExpertPredictor):
    kind = "residual"

    def __init__(
        self, identity: dict, horizon: int = 3, rank: int = 64, dropout: float = 0.0, train_router: bool = True
    ):
        super().__init__(identity, horizon)
        self.rank, self.dropout, self.train_router = int(rank), float(dropout), bool(train_router)
        self.corrections = nn.ModuleList()
        for l in range(self.num_layers):
            num_ahead = max(self.horizon_at(l), 1)
            router_HED = torch.zeros(num_ahead, self.num_experts, self.hidden_size)
            if self.train_router:
                self.register_parameter(f"router_{l}_HED", nn.Parameter(router_HED))
            else:
                self.register_buffer(f"router_{l}_HED", router_HED)
            mlp = nn.Sequential(
                nn.Linear(self.hidden_size, self.rank),
                nn.GELU(),
                nn.Dropout(self.dropout),
                nn.Linear(self.rank, num_ahead * self.num_experts),
            )
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
        return {"rank": self.rank, "dropout": self.dropout, "train_router": self.train_router}

    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        num_ahead = self.horizon_at(layer)
        if num_ahead == 0:
            return self._empty(hidden_TD)
        router_HED = getattr(self, f"router_{layer}_HED")
        reuse_THE = torch.einsum("td,hed->the", hidden_TD, router_HED)
        correction_THE = self.corrections[layer](hidden_TD).view(hidden_TD.shape[0], num_ahead, self.num_experts)
        return reuse_THE + correction_THE


def _linear_router_weight(adapter: MoEAdapter, layer: int) -> torch.Tensor:
    """Layer `layer`'s router weight [E, D], checked to reproduce the adapter's selection scores."""
    weight_ED = getattr(adapter.router(layer), "weight", None)
    if weight_ED is None or tuple(weight_ED.shape) != (adapter.num_experts, adapter.hidden_size):
        raise ValueError(
            f"the residual predictor needs a linear router [E, D]; {adapter.model_type} layer {layer} has "
            f"{type(adapter.router(layer)).__name__}"
        )
    probe_TD = torch.randn(4, adapter.hidden_size, generator=torch.Generator().manual_seed(0)).to(weight_ED)
    expected_TE = adapter.selection_scores(layer, probe_TD).float()
    if not torch.allclose(F.softmax(F.linear(probe_TD, weight_ED).float(), dim=-1), expected_TE, atol=1e-3):
        raise ValueError(f"{adapter.model_type}'s selection scores are not a softmax of a linear router")
    return weight_ED.detach().float().cpu()
