"""The next token's first MoE layer: a head from the last MoE layer's router input of pass p to the experts that
MoE layer 0 chooses at pass p + 1.

    head = NextPassHead.from_adapter(adapter, rank=32)     # starts at router reuse: layer 0's router
    predictor.attach_next_pass(head)                       # any bank kind; saved and loaded with the bank
    predictor.predicts_next_pass                           # True
    probs_TE = predictor.predict_next_pass(hidden_TD)      # hidden_TD: router input of MoE layer L-1 at pass p
    probs_TE = predictor.predict_next_pass(hidden_TD, next_token_T)   # once the next token is known (see below)

logits_TE = hidden_TD @ W^T + MLP(hidden_TD), W starting as layer 0's router weight when that router ranks experts
by its linear logits (the residual kind's condition), else at zero; the MLP's last layer starts at zero, so the
head starts exactly at router reuse across the pass boundary. Without a trained bank, the runtime gets the same
thing from `RouterReusePredictor.predict_next_pass` (layer 0's real router).

The next token's identity says much more about MoE layer 0 than the last layer's state does: layer 0 routes mostly
by token. A head made with `vocab_size` > 0 also holds a token table, log P(layer 0 selects e | input token v)
[V, E], counted on the training split (`token_layer0_counts`; a lookup, no FLOPs) and then trained with the rest of
the head, and given `next_token_T` it adds `token_scale * table[next_token]` to its logits. The token is the model's
own choice: in greedy decoding the argmax of pass p's logits, in any decoding the input id of pass p + 1 (known when
that pass starts, before its embedding and layer-0 attention run). Training fits the head both alone and with the
table, so either call works.

    targets = next_pass_targets(split)                     # per harvest row: layer 0's ids at the next position
    recall = next_pass_recall({"bank": bank.predict_next_pass, "router-reuse": ...}, split, last_index, top_k)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from specmd_predict.adapters.base import MoEAdapter


class NextPassHead(nn.Module):
    def __init__(self, hidden_size: int, num_experts: int, rank: int = 32, vocab_size: int = 0):
        super().__init__()
        self.hidden_size, self.num_experts, self.rank = int(hidden_size), int(num_experts), int(rank)
        self.vocab_size = int(vocab_size)
        if self.vocab_size > 0:  # the token table (counted, then fine-tuned) and how much the head trusts it
            # a parameter, not a buffer: training moves the counted log-frequencies towards what the state misses
            # (0.858 -> 0.865 recall in a side run, docs/results/predictors.md); same state-dict key, so older banks
            # still load
            self.token_log_table_VE = nn.Parameter(torch.zeros(self.vocab_size, self.num_experts))
            self.token_scale = nn.Parameter(torch.ones(()))
        self.router_ED = nn.Parameter(torch.zeros(self.num_experts, self.hidden_size))
        self.correction = nn.Sequential(
            nn.Linear(self.hidden_size, self.rank), nn.GELU(), nn.Linear(self.rank, self.num_experts)
        )
        nn.init.zeros_(self.correction[-1].weight)
        nn.init.zeros_(self.correction[-1].bias)

    @classmethod
    def from_adapter(cls, adapter: MoEAdapter, rank: int = 32, vocab_size: int = 0) -> NextPassHead:
        """A head for `adapter`'s model, starting at layer 0's router where it qualifies (else at zero)."""
        from specmd_predict.predictors.residual import _linear_router_weight

        head = cls(adapter.hidden_size, adapter.num_experts, rank, vocab_size)
        try:
            weight_ED = _linear_router_weight(adapter, 0)
        except ValueError:
            return head  # the correction MLP learns it all
        with torch.no_grad():
            head.router_ED.copy_(weight_ED)
        return head

    @property
    def uses_next_token(self) -> bool:
        """Whether the head holds a token table (`forward` then takes the next token)."""
        return self.vocab_size > 0

    def set_token_table(self, counts_VE: torch.Tensor, smoothing: float = 0.5) -> None:
        """Fill the token table from counts [V, E] of layer-0 selections per input token: log of the per-token
        distribution over experts, smoothed towards the overall layer-0 frequency (a token seen `n` times
        weighs its own counts n / (n + smoothing)); an unseen token gets the overall frequency."""
        if not self.uses_next_token:
            raise ValueError("this next-pass head has no token table (made with vocab_size 0)")
        counts_VE = counts_VE.float().cpu()
        if tuple(counts_VE.shape) != (self.vocab_size, self.num_experts):
            expected = (self.vocab_size, self.num_experts)
            raise ValueError(f"token counts of shape {tuple(counts_VE.shape)}, expected {expected}")
        prior_E = (counts_VE.sum(0) + 1) / (counts_VE.sum() + self.num_experts)
        table_VE = (counts_VE + smoothing * prior_E) / (counts_VE.sum(1, keepdim=True) + smoothing)
        with torch.no_grad():
            self.token_log_table_VE.copy_(table_VE.log())

    def hparams(self) -> dict:
        return {"rank": self.rank, "vocab_size": self.vocab_size}

    def forward(self, hidden_TD: torch.Tensor, next_token_T: torch.Tensor | None = None) -> torch.Tensor:
        """[T, E] router-like logits for MoE layer 0 of the next pass (differentiable); with `next_token_T` [T]
        (the token pass p + 1 receives) and a token table, the table's row for that token is added."""
        logits_TE = hidden_TD @ self.router_ED.T + self.correction(hidden_TD)
        if next_token_T is None or not self.uses_next_token:
            return logits_TE
        token_T = next_token_T.to(device=self.token_log_table_VE.device, dtype=torch.long)  # no host read here
        return logits_TE + self.token_scale * self.token_log_table_VE[token_T].to(logits_TE.dtype)


def token_layer0_counts(split, vocab_size: int, num_experts: int) -> torch.Tensor:
    """[V, E] how often MoE layer 0 selected each expert for each input token, over a harvest split's rows."""
    if "token_id" not in split.column_names:
        raise ValueError("the harvest has no token_id column: the next-pass token table needs the input tokens")
    table = split.with_format("torch", columns=["token_id", "expert_ids"])[:]
    token_N, ids_NK = table["token_id"].long(), table["expert_ids"][:, 0].long()
    if len(token_N) and (int(token_N.min()) < 0 or int(token_N.max()) >= vocab_size):
        raise ValueError(f"the harvest's token ids exceed the model's vocabulary of {vocab_size}")
    counts_VE = torch.zeros(vocab_size, num_experts)
    rows = token_N.repeat_interleave(ids_NK.shape[1])
    counts_VE.index_put_((rows, ids_NK.flatten()), torch.ones(ids_NK.numel()), accumulate=True)
    return counts_VE


def next_pass_targets(split) -> dict[str, torch.Tensor]:
    """For every row of a harvest split: MoE layer 0's experts at the same sequence's next position.

    {"next_ids": [N, K] long (zeros where missing), "has_next": [N] bool, with a token_id column also
    "next_token": [N] long, the token of that next position (0 where missing), and with a phase column (generate
    mode) "next_is_decode": [N] bool, that next position is a decode pass}. Rows are matched by
    (sequence_id, position + 1), whatever their order, so generate-mode harvests work as teacher-forced ones do.
    """
    with_tokens = "token_id" in split.column_names
    columns = ["sequence_id", "position", "expert_ids"] + (["token_id"] if with_tokens else [])
    table = split.with_format("torch", columns=columns)[:]
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
    targets = {"next_ids": next_ids_NK, "has_next": has_next_N}
    if "phase" in split.column_names:  # whether the next pass is a one-token decode pass
        decode_N = torch.tensor([phase == "decode" for phase in split["phase"]], dtype=torch.bool)
        targets["next_is_decode"] = torch.zeros_like(has_next_N)
        targets["next_is_decode"][has_next_N] = decode_N[next_row_N[has_next_N]]
    if with_tokens:
        next_token_N = torch.zeros_like(sequence_N)
        next_token_N[has_next_N] = table["token_id"].long()[next_row_N[has_next_N]]
        targets["next_token"] = next_token_N
    return targets


@torch.no_grad()
def next_pass_recall(
    scorers: Mapping[str, Callable[..., torch.Tensor]],
    split,
    last_index: int,
    top_k: int,
    batch_size: int = 4096,
    phase: str | None = None,
) -> dict[str, float]:
    """Recall@K of each scorer over the rows of `split` that have a next token; `last_index` is layer L-1's index
    in `hidden`. A scorer maps (MoE layer L-1's router input [N, D], the next token [N] or None when the split has
    no token ids) to scores [N, E] for layer 0 of the next pass. `phase` "decode" / "prefill": only the rows whose
    next pass is of that phase (a generate-mode harvest; NaN when there is none)."""
    from specmd_predict.predictors.recall import LayerHorizonRecall

    targets = next_pass_targets(split)
    keep_N = targets["has_next"].clone()
    if phase is not None:
        if "next_is_decode" not in targets:
            raise ValueError("phase needs a generate-mode harvest (a phase column)")
        keep_N &= targets["next_is_decode"] if phase == "decode" else ~targets["next_is_decode"]
    metrics = {name: LayerHorizonRecall(1, 1, top_k) for name in scorers}
    view = split.with_format("torch", columns=["hidden"])
    for start in range(0, len(view), batch_size):
        hidden_ND = view[start : start + batch_size]["hidden"][:, last_index].float()
        ids_NK = targets["next_ids"][start : start + batch_size]
        mask_N = keep_N[start : start + batch_size]
        token_N = targets["next_token"][start : start + batch_size] if "next_token" in targets else None
        for name, scorer in scorers.items():
            metrics[name].update(0, 0, scorer(hidden_ND, token_N).float().cpu(), ids_NK, mask_N)
    return {name: float(m.result()["recall"][0, 0, 0]) for name, m in metrics.items()}


def next_pass_scorers(predictor) -> dict[str, Callable]:
    """A bank's next-pass scorers for `next_pass_recall`: its head with the next token (when it has a token table),
    the head alone from the last MoE layer's state, and the token table alone."""
    head = predictor.next_pass_head
    if head is None or not head.uses_next_token:
        return {"trained": lambda hidden_ND, token_N: predictor.predict_next_pass(hidden_ND)}
    table_VE = head.token_log_table_VE
    return {
        "trained (with next token)": predictor.predict_next_pass,
        "trained (state only)": lambda hidden_ND, token_N: predictor.predict_next_pass(hidden_ND),
        "token table only": lambda hidden_ND, token_N: table_VE[token_N.to(table_VE.device)],
    }


def next_pass_baselines(adapter: MoEAdapter, frequency_E: torch.Tensor) -> dict[str, Callable]:
    """Router reuse across the pass boundary (layer 0's real router on layer L-1's input) and layer 0's frequency;
    both ignore the next token, except where layer 0 is hash-routed (DeepSeek-V4): there router reuse looks the
    next token up in layer 0's table (exact, as layer 0 itself does once the token is sampled)."""
    hashed = adapter.hash_table(0) is not None

    def reuse(hidden_ND: torch.Tensor, token_N: torch.Tensor | None = None) -> torch.Tensor:
        weight = next(adapter.router(0).parameters())
        hidden_ND = hidden_ND.to(device=weight.device, dtype=weight.dtype)
        if not hashed:
            return adapter.selection_scores(0, hidden_ND)
        if token_N is None:
            raise ValueError("MoE layer 0 is hash-routed: router reuse for the next pass needs the next token ids")
        return adapter.selection_scores(0, hidden_ND, token_ids_T=token_N.to(weight.device))

    def frequency(hidden_ND: torch.Tensor, token_N: torch.Tensor | None = None) -> torch.Tensor:
        return frequency_E.expand(hidden_ND.shape[0], -1)

    return {"router-reuse": reuse, "frequency": frequency}
