"""(f) Routing-only predictor: layer l+h's experts from the experts chosen at layer l, and from the previous
token's choices at l+h when they exist. No hidden states, so it also serves routing logged without them.

    predictor = RoutingOnlyPredictor(identity, horizon=3)                     # use_previous=False: layer l only
    probs_THE = predictor.predict_routing(layer, ids_TK, previous_ids_TLK)   # previous token's ids, or None

Per source layer l and horizon h: logits = multi_hot(ids at l) @ A[l, h] + multi_hot(previous token's ids at
l + h) @ B[l, h] + b[l, h], i.e. learned expert-to-expert transition scores (E x E each), through the same
selection-probability rule as the other kinds. A token without a previous one (a sequence's first) has an
all-zero previous row. `previous_routing_ids(split)` gives the previous row's ids for every harvest row.
With `use_previous=False` the B term is left out (no parameters): where consecutive tokens share few experts its
E x E weights per (l, h) mostly fit noise on a small trace (docs/results/traces.md, FLAME-MoE-290M).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from specmd_predict.predictors.base import ExpertPredictor, selection_probs
from specmd_predict.predictors.metrics import multi_hot


class RoutingOnlyPredictor(ExpertPredictor):
    kind = "routing"
    uses_routing: ClassVar[bool] = True  # predictions come from routing ids, not from hidden states

    def __init__(self, identity: dict, horizon: int = 3, use_previous: bool = True):
        super().__init__(identity, horizon)
        E, H = self.num_experts, self.horizon
        self.use_previous = bool(use_previous)
        self.current_LHEE = nn.Parameter(torch.zeros(self.num_layers, H, E, E))
        self.previous_LHEE = nn.Parameter(torch.zeros(self.num_layers, H, E, E)) if self.use_previous else None
        self.bias_LHE = nn.Parameter(torch.zeros(self.num_layers, H, E))

    def hparams(self) -> dict:
        return {"use_previous": self.use_previous}

    def logits(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        raise ValueError("the routing-only predictor predicts from routing: call predict_routing(layer, ids_TK, ...)")

    def logits_routing(
        self, layer: int, ids_TK: torch.Tensor, previous_ids_TLK: torch.Tensor | None = None, has_previous_T=None
    ) -> torch.Tensor:
        """[T, H_eff, E] logits for layers layer+1 .. layer+H_eff from layer `layer`'s ids and the previous
        token's ids at every layer ([T, L, K]; rows where `has_previous_T` is False count as absent)."""
        num_ahead = self.horizon_at(layer)
        if num_ahead == 0:
            return torch.zeros(ids_TK.shape[0], 0, self.num_experts, device=ids_TK.device)
        current_TE = multi_hot(ids_TK, self.num_experts).float()
        logits_THE = torch.einsum("te,hef->thf", current_TE, self.current_LHEE[layer, :num_ahead])
        logits_THE = logits_THE + self.bias_LHE[layer, :num_ahead]
        if previous_ids_TLK is not None and self.use_previous:
            targets_THK = previous_ids_TLK[:, layer + 1 : layer + 1 + num_ahead]
            previous_THE = (
                multi_hot(targets_THK.flatten(0, 1), self.num_experts).float().view(*targets_THK.shape[:2], -1)
            )
            if has_previous_T is not None:
                previous_THE = previous_THE * has_previous_T.float().view(-1, 1, 1)
            logits_THE = logits_THE + torch.einsum("the,hef->thf", previous_THE, self.previous_LHEE[layer, :num_ahead])
        return logits_THE

    @torch.no_grad()
    def predict_routing(
        self, layer: int, ids_TK: torch.Tensor, previous_ids_TLK: torch.Tensor | None = None, has_previous_T=None
    ) -> torch.Tensor:
        """[T, H_eff, E] probabilities in [0, 1], like `predict` of the hidden-state kinds."""
        device = self.bias_LHE.device
        previous = None if previous_ids_TLK is None else previous_ids_TLK.to(device)
        mask = None if has_previous_T is None else has_previous_T.to(device)
        return selection_probs(self.logits_routing(layer, ids_TK.to(device), previous, mask), self.top_k)


def predict_any(predictor, layer: int, hidden_ND, ids_NLK, previous: dict | None = None, start: int = 0):
    """`predict` for hidden-state kinds, `predict_routing` for the routing-only kind (rows `start`.. of a split
    whose `previous_routing_ids` are `previous`)."""
    if not getattr(predictor, "uses_routing", False):
        return predictor.predict(layer, hidden_ND)
    rows = slice(start, start + ids_NLK.shape[0])
    if previous is None:
        return predictor.predict_routing(layer, ids_NLK[:, layer])
    return predictor.predict_routing(
        layer, ids_NLK[:, layer], previous["previous_ids"][rows], previous["has_previous"][rows]
    )


def previous_routing_ids(split) -> dict[str, torch.Tensor]:
    """For every harvest row: the same sequence's previous position's ids at every layer.

    {"previous_ids": [N, L, K] long (zeros where missing), "has_previous": [N] bool}; rows are matched by
    (sequence_id, position - 1), whatever their order.
    """
    table = split.with_format("torch", columns=["sequence_id", "position", "expert_ids"])[:]
    sequence_N, position_N = table["sequence_id"].long(), table["position"].long()
    ids_NLK = table["expert_ids"].long()
    key_N = sequence_N * (int(position_N.max()) + 2) + position_N
    order = key_N.argsort()
    follows = key_N[order][1:] == key_N[order][:-1] + 1
    previous_row_N = torch.full_like(order, -1)
    previous_row_N[order[1:][follows]] = order[:-1][follows]
    has_previous_N = previous_row_N >= 0
    previous_NLK = torch.zeros_like(ids_NLK)
    previous_NLK[has_previous_N] = ids_NLK[previous_row_N[has_previous_N]]
    return {"previous_ids": previous_NLK, "has_previous": has_previous_N}
