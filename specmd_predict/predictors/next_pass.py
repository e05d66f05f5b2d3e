"""The next token's first MoE layer: a head from the last MoE layer's router input of pass p to the experts that
MoE layer 0 chooses at pass p + 1.

    head = NextPassHead.from_adapter(adapter, rank=32)     # starts at router reuse: layer 0's router
    predictor.attach_next_pass(head)                       # any bank kind; saved and loaded with the bank
    predictor.predicts_next_pass                           # True
    probs_TE = predictor.predict_next_pass(hidden_TD)      # hidden_TD: router input of MoE layer L-1 at pass p

logits_TE = hidden_TD @ W^T + MLP(hidden_TD), W starting as layer 0's router weight when that router ranks experts
by its linear logits (the residual kind's condition), else at zero; the MLP's last layer starts at zero, so the
head starts exactly at router reuse across the pass boundary. Without a trained bank, the runtime gets the same
thing from `RouterReusePredictor.predict_next_pass` (layer 0's real router).

    targets = next_pass_targets(split)                     # per harvest row: layer 0's ids at the next position
    recall = next_pass_recall({"bank": bank.predict_next_pass, "router-reuse": ...}, split, last_index, top_k)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from specmd_predict.adapters.base import MoEAdapter


class NextPassHead(nn.Module):
    def __init__(self, hidden_size: int, num_experts: int, rank: int = 32):
        super().__init__()
        self.hidden_size, self.num_experts, self.rank = int(hidden_size), int(num_experts), int(rank)
        self.router_ED = nn.Parameter(torch.zeros(self.num_experts, self.hidden_size))
        self.correction = nn.Sequential(
            nn.Linear(self.hidden_size, self.rank), nn.GELU(), nn.Linear(self.rank, self.num_experts)
        )
        nn.init.zeros_(self.correction[-1].weight)
        nn.init.zeros_(self.correction[-1].bias)

    @classmethod
    def from_adapter(cls, adapter: MoEAdapter, rank: int = 32) -> NextPassHead:
        """A head for `adapter`'s model, starting at layer 0's router where it qualifies (else at zero)."""
        from specmd_predict.predictors.residual import _linear_router_weight

        head = cls(adapter.hidden_size, adapter.num_experts, rank)
        try:
            weight_ED = _linear_router_weight(adapter, 0)
        except ValueError:
            return head  # the correction MLP learns it all
        with torch.no_grad():
            head.router_ED.copy_(weight_ED)
        return head

    def hparams(self) -> dict:
        return {"rank": self.rank}

    def forward(self, hidden_TD: torch.Tensor) -> torch.Tensor:
        """[T, E] router-like logits for MoE layer 0 of the next pass (differentiable)."""
        return hidden_TD @ self.router_ED.T + self.correction(hidden_TD)


def next_pass_targets(split) -> dict[str, torch.Tensor]:
    """For every row of a harvest split: MoE layer 0's experts at the same sequence's next position.

    {"next_ids": [N, K] long (zeros where missing), "has_next": [N] bool}. Rows are matched by
    (sequence_id, position + 1), whatever their order, so generate-mode harvests work as teacher-forced ones do.
    """
    table = split.with_format("torch", columns=["sequence_id", "position", "expert_ids"])[:]
    sequence_N, position_N = table["sequence_id"].long(), table["position"].long()
    first_NK = table["expert_ids"][:, 0].long()
    key_N = sequence_N * (int(position_N.max()) + 2) + position_N
    order = key_N.argsort()
    follows = key_N[order][1:] == key_N[order][:-1] + 1  # same sequence, next position
    next_row_N = torch.full_like(order, -1)
    next_row_N[order[:-1][follows]] = order[1:][follows]
    has_next_N = next_row_N >= 0
    next_ids_NK = torch.zeros_like(first_NK)
    next_ids_NK[has_next_N] = first_NK[next_row_N[has_next_N]]
    return {"next_ids": next_ids_NK, "has_next": has_next_N}


@torch.no_grad()
def next_pass_recall(
    scorers: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    split,
    last_index: int,
    top_k: int,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Recall@K of each scorer (MoE layer L-1's router input [N, D] -> scores [N, E] for layer 0 of the next
    pass) over the rows of `split` that have a next token; `last_index` is layer L-1's index in `hidden`."""
    from specmd_predict.predictors.recall import LayerHorizonRecall

    targets = next_pass_targets(split)
    metrics = {name: LayerHorizonRecall(1, 1, top_k) for name in scorers}
    view = split.with_format("torch", columns=["hidden"])
    for start in range(0, len(view), batch_size):
        hidden_ND = view[start : start + batch_size]["hidden"][:, last_index].float()
        ids_NK = targets["next_ids"][start : start + batch_size]
        mask_N = targets["has_next"][start : start + batch_size]
        for name, scorer in scorers.items():
            metrics[name].update(0, 0, scorer(hidden_ND).float().cpu(), ids_NK, mask_N)
    return {name: float(m.result()["recall"][0, 0, 0]) for name, m in metrics.items()}


def next_pass_baselines(adapter: MoEAdapter, frequency_E: torch.Tensor) -> dict[str, Callable]:
    """Router reuse across the pass boundary (layer 0's real router on layer L-1's input) and layer 0's frequency."""

    def reuse(hidden_ND: torch.Tensor) -> torch.Tensor:
        weight = next(adapter.router(0).parameters())
        return adapter.selection_scores(0, hidden_ND.to(device=weight.device, dtype=weight.dtype))

    return {"router-reuse": reuse, "frequency": lambda hidden_ND: frequency_E.expand(hidden_ND.shape[0], -1)}
