"""Shared vocabulary: which experts a router chose, and how an expert is named.

Shape legend used across the project: T tokens, K experts per token (top-k), E experts per layer,
D hidden size, L MoE layers, H prediction horizon (layers ahead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


class ExpertKey(NamedTuple):
    """One routed expert: `layer` is the index among MoE layers (0..L-1), not the decoder index."""

    layer: int
    expert: int


@dataclass
class Routing:
    """What one router decided for a batch of tokens at one MoE layer."""

    expert_ids_TK: torch.Tensor  # int64, the selected experts
    weights_TK: torch.Tensor  # float, the weights the experts' outputs are mixed with
    logits_TE: torch.Tensor | None = None  # raw router logits, when the caller wants them

    @property
    def num_tokens(self) -> int:
        return self.expert_ids_TK.shape[0]

    def sorted_by_expert(self) -> Routing:
        """Same routing with each token's experts in ascending id order (families differ in top-k order)."""
        order_TK = self.expert_ids_TK.argsort(dim=-1)
        return Routing(self.expert_ids_TK.gather(-1, order_TK), self.weights_TK.gather(-1, order_TK), self.logits_TE)
