"""Batches of a harvest split for scoring predictors row by row: the one setup both recall loops share
(eval/predictor_metrics.py, train/report.py).

    for batch in split_batches(predictors.values(), split, num_layers, batch_size=4096, desc="recall"):
        probs_NHE = batch.predict(predictor, layer, index)   # index: the layer's position among the hidden ones
        ... batch.ids_NLK[:, layer + 1 + h] is the truth at horizon h ...

A routing trace has no `hidden` column (routing and frequency kinds only): its rows get zero-width hidden states,
which the frequency kind reads only for their count and the routing kind ignores.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from tqdm import tqdm

from specmd_predict.predictors.base import ExpertPredictor
from specmd_predict.predictors.routing_only import predict_any, previous_routing_ids
from specmd_predict.predictors.row_tokens import rows_token_ids, token_columns


@dataclass
class SplitBatch:
    """One batch of rows: starting at row `start`, their experts and hidden states (see module doc)."""

    start: int
    ids_NLK: torch.Tensor
    hidden_NLD: torch.Tensor
    token_ids_N: torch.Tensor | None  # the rows' input tokens, for hash-routed layers; None where none needs them
    previous: torch.Tensor | None  # every row's previous row ids (routing kind), or None

    def predict(self, predictor: ExpertPredictor, layer: int, index: int) -> torch.Tensor:
        """`predictor`'s probabilities [N, H, E] from source layer `layer`, the `index`-th harvested hidden layer."""
        with rows_token_ids([predictor], self.token_ids_N):
            return predict_any(predictor, layer, self.hidden_NLD[:, index], self.ids_NLK, self.previous, self.start)


def split_batches(
    predictors: Iterable[ExpertPredictor],
    split,
    num_layers: int,
    batch_size: int = 4096,
    desc: str = "batches",
    progress: bool = True,
) -> Iterator[SplitBatch]:
    """The rows of `split` (a harvested datasets.Dataset) in batches of `batch_size`, ready for `predictors`."""
    predictors = list(predictors)
    has_hidden = "hidden" in split.column_names
    columns = ["hidden", "expert_ids"] if has_hidden else ["expert_ids"]
    tokens = token_columns(predictors, split)  # hash-routed layers route by the rows' tokens
    view = split.with_format("torch", columns=columns + tokens)
    uses_routing = any(getattr(p, "uses_routing", False) for p in predictors)
    previous = previous_routing_ids(split) if uses_routing else None
    starts = range(0, len(view), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        batch = view[start : start + batch_size]
        ids_NLK = batch["expert_ids"].long()
        hidden_NLD = batch["hidden"].float() if has_hidden else ids_NLK.new_zeros(len(ids_NLK), num_layers, 0).float()
        yield SplitBatch(start, ids_NLK, hidden_NLD, batch[tokens[0]] if tokens else None, previous)
