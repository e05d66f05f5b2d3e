"""Frequency baseline: each later layer's most used experts, whatever the token.

    predictor = FrequencyPredictor.from_expert_ids(expert_ids_NLK, identity, horizon=3)
    predictor = FrequencyPredictor.from_dataset(harvest.train, identity, horizon=3)
    probs_THE = predictor.predict(layer, hidden_TD)   # [T, H_eff, E], the same row for every token

`frequency_LE[j, e]` is the fraction of tokens that selected expert e at layer j (sums to K over e).
It is a bank kind like the learned ones ("frequency"), so eval/ can load it from disk.
"""

from __future__ import annotations

import torch

from specmd_predict.predictors.base import ExpertPredictor


class FrequencyPredictor(ExpertPredictor):
    kind = "frequency"

    def __init__(self, identity: dict, horizon: int = 3, frequency_LE: torch.Tensor | None = None):
        super().__init__(identity, horizon)
        if frequency_LE is None:
            frequency_LE = torch.full((self.num_layers, self.num_experts), self.top_k / self.num_experts)
        if tuple(frequency_LE.shape) != (self.num_layers, self.num_experts):
            raise ValueError(
                f"frequency table has shape {tuple(frequency_LE.shape)}, "
                f"expected ({self.num_layers}, {self.num_experts})"
            )
        self.register_buffer("frequency_LE", frequency_LE.float().clone())

    @classmethod
    def from_expert_ids(cls, expert_ids_NLK: torch.Tensor, identity: dict, horizon: int = 3) -> FrequencyPredictor:
        """Count, per layer, how often each expert was selected over N tokens."""
        num_tokens, num_layers, _ = expert_ids_NLK.shape
        num_experts = int(identity["num_experts"])
        counts_LE = torch.zeros(num_layers, num_experts, dtype=torch.float64)
        counts_LE.scatter_add_(
            1,
            expert_ids_NLK.long().permute(1, 0, 2).reshape(num_layers, -1),
            torch.ones(num_layers, expert_ids_NLK[..., 0].numel() * expert_ids_NLK.shape[2], dtype=torch.float64),
        )
        return cls(identity, horizon, (counts_LE / max(num_tokens, 1)).float())

    @classmethod
    def from_dataset(
        cls, dataset, identity: dict, horizon: int = 3, column: str = "expert_ids", batch_size: int = 8192
    ) -> FrequencyPredictor:
        """Count from a harvested `datasets.Dataset` (column `expert_ids` [L, K]), a batch at a time."""
        num_experts = int(identity["num_experts"])
        num_layers = int(identity["num_layers"])
        counts_LE = torch.zeros(num_layers, num_experts, dtype=torch.float64)
        view = dataset.with_format("torch", columns=[column])
        for start in range(0, len(view), batch_size):
            ids_NLK = view[start : start + batch_size][column].long()
            counts_LE.scatter_add_(
                1,
                ids_NLK.permute(1, 0, 2).reshape(num_layers, -1),
                torch.ones(num_layers, ids_NLK.shape[0] * ids_NLK.shape[2], dtype=torch.float64),
            )
        return cls(identity, horizon, (counts_LE / max(len(view), 1)).float())

    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return torch.log(self._rows(layer, hidden_TD).clamp(min=1e-30))

    @torch.no_grad()
    def predict(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return self._rows(layer, hidden_TD).clamp(0.0, 1.0)

    def _rows(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        num_ahead = self.horizon_at(layer)
        rows_HE = self.frequency_LE[layer + 1 : layer + 1 + num_ahead]
        return rows_HE.to(hidden_TD.device).unsqueeze(0).expand(hidden_TD.shape[0], -1, -1)
