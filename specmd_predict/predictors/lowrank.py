"""(c) Low-rank MLP: per source layer, D -> rank -> GELU [-> rank -> GELU, `depth` - 1 times] -> H*E router-like logits.

predictor = LowRankPredictor(identity, horizon=3, rank=64, depth=2)
"""

from __future__ import annotations

import torch
from torch import nn

from specmd_predict.predictors.base import RankedPredictor


class LowRankPredictor(RankedPredictor):
    kind = "lowrank"

    def __init__(self, identity: dict, horizon: int = 3, rank: int = 64, dropout: float = 0.0, depth: int = 1):
        super().__init__(identity, horizon, rank, dropout, depth)
        self.mlps = nn.ModuleList(
            self.rank_mlp(max(self.horizon_at(l), 1) * self.num_experts) for l in range(self.num_layers)
        )

    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        num_ahead = self.horizon_at(layer)
        if num_ahead == 0:
            return self._empty(hidden_TD)
        return self.mlps[layer](hidden_TD).view(hidden_TD.shape[0], num_ahead, self.num_experts)
