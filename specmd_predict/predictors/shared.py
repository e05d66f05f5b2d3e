"""(e) One network shared across layers, told the source layer by a learned layer embedding.

    predictor = SharedPredictor(identity, horizon=3, rank=128)

hidden_TD -> Linear(D, rank) + embedding[l] -> GELU -> Linear(rank, rank) -> GELU -> Linear(rank, H*E),
the first H_eff horizons kept. Fewer parameters than per-layer heads when L is large.
"""

from __future__ import annotations

import torch
from torch import nn

from specmd_predict.predictors.base import RankedPredictor


class SharedPredictor(RankedPredictor):
    kind = "shared"

    def __init__(self, identity: dict, horizon: int = 3, rank: int = 128, dropout: float = 0.0):
        super().__init__(identity, horizon, rank, dropout)
        self.input = nn.Linear(self.hidden_size, self.rank)
        self.layer_embedding = nn.Embedding(self.num_layers, self.rank)
        self.body = nn.Sequential(nn.GELU(), nn.Dropout(self.dropout), nn.Linear(self.rank, self.rank), nn.GELU())
        self.output = nn.Linear(self.rank, self.horizon * self.num_experts)

    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        num_ahead = self.horizon_at(layer)
        if num_ahead == 0:
            return self._empty(hidden_TD)
        h_TR = self.input(hidden_TD) + self.layer_embedding.weight[layer]
        out_THE = self.output(self.body(h_TR)).view(hidden_TD.shape[0], self.horizon, self.num_experts)
        return out_THE[:, :num_ahead]
