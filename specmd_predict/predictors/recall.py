"""The project's one recall@k implementation: a torchmetrics `Metric` over (source layer, horizon) pairs.

    metric = LayerHorizonRecall(num_layers=L, horizon=H, top_k=K, ks=(4, 8))
    metric.update(layer, h, scores_NE, true_ids_NK)     # h: 0-based horizon index (layer + 1 + h is predicted)
    out = metric.result()                              # {"recall": [len(ks), L, H], "exact_match": [L, H], ...}

Used by train/module.py (validation), train/report.py (the recall table) and eval/predictor_metrics.py.
`update` only adds tensors on the metric's device (no `.item()`, no host sync); torchmetrics sums the states
across processes in `compute`, so validation recall is right under DDP. Definitions (../shared/DESIGN.md section 4):
recall@k = |top-k(scores) & true| / K and precision@k = the same hits / k, averaged over tokens; exact_match: the
top-K set equals the true set. Pairs never updated are NaN. Imported lazily (not from the package's __init__),
so loading a bank at inference pulls in no torchmetrics.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from specmd_predict.predictors.metrics import topk_hits


class LayerHorizonRecall(Metric):
    """Sums of top-k hits, exact top-K matches and token counts per (layer, horizon); see the module doc."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_layers: int, horizon: int, top_k: int, ks: tuple[int, ...] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_layers, self.horizon, self.top_k = int(num_layers), int(horizon), int(top_k)
        self.ks = (self.top_k,) if ks is None else tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"k must be at least 1, got {self.ks}")
        shape = (self.num_layers, self.horizon)
        self.add_state("hits", torch.zeros(len(self.ks), *shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("exact", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self, layer: int, h: int, scores_NE: torch.Tensor, true_ids_NK: torch.Tensor, mask_N: torch.Tensor | None = None
    ) -> None:
        """Add one batch of predictions for layer `layer + 1 + h` made at source layer `layer`.

        `mask_N` (bool): count only these rows (e.g. tokens that have a next pass); a mask, not an index, so no
        host sync on a GPU.
        """
        if scores_NE.shape[0] != true_ids_NK.shape[0]:
            raise ValueError(f"{scores_NE.shape[0]} score rows but {true_ids_NK.shape[0]} rows of true ids")
        scores_NE = scores_NE.detach().to(self.hits.device)
        true_ids_NK = true_ids_NK.to(self.hits.device)
        weight_N = None if mask_N is None else mask_N.to(self.hits.device, torch.float64)
        for i, k in enumerate(self.ks):
            hits_N = topk_hits(scores_NE, true_ids_NK, k)
            self.hits[i, layer, h] += _masked_sum(hits_N, weight_N)
            if k == self.top_k:
                self.exact[layer, h] += _masked_sum(hits_N == self.top_k, weight_N)
        if self.top_k not in self.ks:
            self.exact[layer, h] += _masked_sum(topk_hits(scores_NE, true_ids_NK) == self.top_k, weight_N)
        self.tokens[layer, h] += scores_NE.shape[0] if weight_N is None else weight_N.sum()

    def result(self) -> dict[str, torch.Tensor]:
        """`compute()` with its full shapes: torchmetrics squeezes one-element results (e.g. L = H = 1) to scalars."""
        shapes = {
            "recall": (len(self.ks), self.num_layers, self.horizon),
            "precision": (len(self.ks), self.num_layers, self.horizon),
            "exact_match": (self.num_layers, self.horizon),
            "tokens": (self.num_layers, self.horizon),
        }
        return {name: value.reshape(shapes[name]) for name, value in self.compute().items()}

    def compute(self) -> dict[str, torch.Tensor]:
        tokens_LH = torch.where(self.tokens > 0, self.tokens, torch.full_like(self.tokens, float("nan")))
        ks = torch.tensor(self.ks, dtype=torch.float64, device=self.hits.device).view(-1, 1, 1)
        return {
            "recall": self.hits / tokens_LH / self.top_k,
            "precision": self.hits / tokens_LH / ks,
            "exact_match": self.exact / tokens_LH,
            "tokens": self.tokens,
        }


def _masked_sum(values_N: torch.Tensor, weight_N: torch.Tensor | None) -> torch.Tensor:
    values_N = values_N.to(torch.float64)
    return values_N.sum() if weight_N is None else (values_N * weight_N).sum()
