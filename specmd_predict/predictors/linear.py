"""(b) Linear head: one linear map per source layer from the router input to router-like logits for l+1..l+H.

predictor = LinearPredictor(identity, horizon=3)
probs_THE = predictor.predict(layer, hidden_TD)
"""

from __future__ import annotations

import torch
from torch import nn

from specmd_predict.predictors.base import ExpertPredictor


class LinearPredictor(ExpertPredictor):
    kind = "linear"

    def __init__(self, identity: dict, horizon: int = 3):
        super().__init__(identity, horizon)
        self.heads = nn.ModuleList(
            nn.Linear(self.hidden_size, max(self.horizon_at(l), 1) * self.num_experts) for l in range(self.num_layers)
        )

    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        num_ahead = self.horizon_at(layer)
        if num_ahead == 0:
            return self._empty(hidden_TD)
        return self.heads[layer](hidden_TD).view(hidden_TD.shape[0], num_ahead, self.num_experts)
