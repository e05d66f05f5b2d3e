"""No prefetching: experts are copied only on demand misses.

make_prefetch("none")
"""

from __future__ import annotations

import torch

from specmd_predict.policies import PrefetchPolicy
from specmd_predict.routing import ExpertKey, Routing


class NoPrefetch(PrefetchPolicy):
    name = "none"

    def __init__(self) -> None:
        self.probabilities: dict[ExpertKey, float] = {}

    def propose(self, layer: int, hidden_TD: torch.Tensor | None, routing: Routing) -> list[tuple[ExpertKey, float]]:
        return []
