"""Learned next use: per expert of every MoE layer, how many layer-steps until it is next used, counted across
pass boundaries, from the router input at the current layer.

    head = NextUseHead(hidden_size=D, num_layers=L, num_experts=E, rank=32)
    predictor.attach_next_use(head)                    # any bank kind; saved and loaded with the bank
    next_LE = predictor.predict_next_use(layer, hidden_TD)     # [L, E] expected layer-steps from (pass p, layer)

Clock: (pass p, MoE layer l). The next use of (j, e) is j - l steps away when the pass uses it at j > l, else
(L - l) + j + L (g - 1), g >= 1 the passes until the next pass that uses it. The head
learns log g for every (j, e) from layer l's router input (a regression on the log, so that rare experts do not
dominate the loss), over the experts the sequence used within the last `MAX_PASSES` passes (`resident_weight`:
the ones an evictor compares); the bank's own probabilities p for layers l+1..l+H say whether this pass uses (j, e), and
`compose_next_use` mixes the two: p (j - l) + (1 - p) later. Beyond the horizon the chance of a use in this
pass is taken as 1 / g. least-stale-predicted's heuristic is the same formula with g = 1 / (usage frequency),
so the learned part is exactly what replaces a hand-made guess (`heuristic_next_use`).
Passes are tokens of one sequence in order (decode: one token per pass; a teacher-forced harvest replays as
such); uses beyond the sequence's end are censored at `MAX_PASSES`. Per-token rows reduce to one [L, E] table
by the minimum over tokens: a multi-token pass needs (j, e) as soon as its first token does.

    targets = next_use_targets(split, E)   # {"passes_NLE", "since_NLE": uint8 [N, L, E]}: g, and passes since last use
    tables_PLLE = true_next_use_tables(used_PLE)   # the exact tables of a replayed trace (next_use_gap --oracle)
"""

from __future__ import annotations

import torch
from torch import nn

MAX_PASSES = 64  # passes until next use are capped here (and uses after a sequence's end count as this)


class NextUseHead(nn.Module):
    """hidden_TD (+ a learned embedding of the source layer) -> rank -> GELU -> [L, E] log(passes until next use)."""

    def __init__(self, hidden_size: int, num_layers: int, num_experts: int, rank: int = 32):
        super().__init__()
        self.hidden_size, self.num_layers, self.num_experts = int(hidden_size), int(num_layers), int(num_experts)
        self.rank = int(rank)
        self.input = nn.Linear(self.hidden_size, self.rank)
        self.layer_embedding = nn.Embedding(self.num_layers, self.rank)
        self.output = nn.Linear(self.rank, self.num_layers * self.num_experts)

    def hparams(self) -> dict:
        return {"num_layers": self.num_layers, "rank": self.rank}

    def forward(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """[T, L, E] predicted log g: passes after this one until (j, e) is next used, from layer `layer`."""
        h_TR = nn.functional.gelu(self.input(hidden_TD) + self.layer_embedding.weight[layer])
        return self.output(h_TR).view(hidden_TD.shape[0], self.num_layers, self.num_experts)


def next_use_distance(
    layer: int,
    ids_NLK: torch.Tensor | None,
    passes_NLE: torch.Tensor,
    num_experts: int,
    used_NLE: torch.Tensor | None = None,
) -> torch.Tensor:
    """[N, L, E] true layer-steps from (pass of each row, `layer`) to the next use of every (j, e); the pass's own
    uses come from `ids_NLK` (or directly as `used_NLE`)."""
    if used_NLE is None:
        used_NLE = torch.zeros(*ids_NLK.shape[:2], num_experts, dtype=torch.bool, device=ids_NLK.device)
        used_NLE.scatter_(2, ids_NLK.long(), True)
    num_layers = used_NLE.shape[1]
    j_L1 = torch.arange(num_layers, device=used_NLE.device).view(num_layers, 1)
    later_NLE = (num_layers - layer) + j_L1 + num_layers * (passes_NLE.float() - 1)
    this_pass_NLE = used_NLE & (j_L1 > layer)
    return torch.where(this_pass_NLE, (j_L1 - layer).float().expand_as(later_NLE), later_NLE)


def next_use_targets(split, num_experts: int, max_passes: int = MAX_PASSES) -> dict[str, torch.Tensor]:
    """For every row: g[j, e] = passes until the same sequence next uses (j, e) after this row's pass (>= 1), as
    `passes_NLE`, and s[j, e] = passes since the sequence last used (j, e), this row's pass included (0: it uses
    it), as `since_NLE` (what `resident_weight` reads).

    Rows are ordered by (sequence_id, position) whatever their order in the split; a sequence's uses after its
    end, or before its start, are unknown and count as `max_passes`, as does anything farther.
    """
    table = split.with_format("torch", columns=["sequence_id", "position", "expert_ids"])[:]
    sequence_N, position_N = table["sequence_id"].long(), table["position"].long()
    ids_NLK = table["expert_ids"].long()
    num_rows, num_layers, _ = ids_NLK.shape
    order = (sequence_N * (int(position_N.max()) + 2) + position_N).argsort()
    passes_NLE = torch.full((num_rows, num_layers, num_experts), max_passes, dtype=torch.uint8)
    since_NLE = torch.full((num_rows, num_layers, num_experts), max_passes, dtype=torch.uint8)
    never_LE = torch.full((num_layers, num_experts), max_passes, dtype=torch.long)
    seen_LE = torch.full((num_layers, num_experts), -1, dtype=torch.long)  # sorted index of the next use
    previous_sequence = None
    for index in range(num_rows - 1, -1, -1):  # backwards: the next use is the last one seen
        row = int(order[index])
        sequence = int(sequence_N[row])
        if sequence != previous_sequence:
            seen_LE.fill_(-1)
            previous_sequence = sequence
        passes_LE = torch.where(seen_LE >= 0, seen_LE - index, never_LE)
        passes_NLE[row] = passes_LE.clamp(max=max_passes).to(torch.uint8)
        seen_LE.scatter_(1, ids_NLK[row], index)
    previous_sequence = None
    for index in range(num_rows):  # forwards: the last use so far, this row's own included
        row = int(order[index])
        sequence = int(sequence_N[row])
        if sequence != previous_sequence:
            seen_LE.fill_(-1)
            previous_sequence = sequence
        seen_LE.scatter_(1, ids_NLK[row], index)
        since_LE = torch.where(seen_LE >= 0, index - seen_LE, never_LE)
        since_NLE[row] = since_LE.clamp(max=max_passes).to(torch.uint8)
    return {"passes_NLE": passes_NLE, "since_NLE": since_NLE}


def resident_weight(since_NLE: torch.Tensor, max_passes: int = MAX_PASSES) -> torch.Tensor:
    """[N, L, E] float weights of the head's loss: 1 for the experts the sequence used within the last `max_passes`
    passes (this one included), else 0. An evictor only compares residents, which are experts used recently
    (or prefetched, whose wait the probabilities give); the others are most of the table (rarely used experts
    whose g is the cap) and, weighted like the rest, they pull the head towards telling used experts from unused
    ones rather than ordering the used ones. Measured: docs/results/least_stale.md."""
    return (since_NLE.long() < max_passes).float()


def compose_next_use(layer: int, probs_THE: torch.Tensor | None, log_passes_TLE: torch.Tensor) -> torch.Tensor:
    """[T, L, E] expected layer-steps until next use from (this pass, `layer`): layers behind wait for a later
    pass, (L - l + j) + L (g - 1); layers l+1..l+H mix this pass's use (probability p) with that wait; farther
    layers take 1 / g as the chance of a use in this pass."""
    num_tokens, L, _ = log_passes_TLE.shape
    passes_TLE = log_passes_TLE.float().exp().clamp(min=1.0)
    j_L1 = torch.arange(L, device=passes_TLE.device).view(L, 1).float()
    later_TLE = (L - layer) + j_L1 + L * (passes_TLE - 1)
    chance_TLE = 1 / passes_TLE
    if probs_THE is not None and probs_THE.shape[1]:
        num_ahead = probs_THE.shape[1]
        chance_TLE = chance_TLE.clone()
        chance_TLE[:, layer + 1 : layer + 1 + num_ahead] = probs_THE.float()
    this_pass_TLE = chance_TLE * (j_L1 - layer) + (1 - chance_TLE) * later_TLE
    return torch.where(j_L1 > layer, this_pass_TLE, later_TLE)


def heuristic_next_use(
    layer: int, probs_THE: torch.Tensor | None, frequency_LE: torch.Tensor, num_tokens: int = 1
) -> torch.Tensor:
    """[T, L, E] least-stale-predicted's hand-made estimate: `compose_next_use` with g = 1 / f, f the expert's
    share of passes that use it (here counted once on the training split, not as the policy's moving average)."""
    log_passes_LE = -torch.log(frequency_LE.float().clamp(min=1 / MAX_PASSES, max=1.0))
    num_tokens = probs_THE.shape[0] if probs_THE is not None else num_tokens
    return compose_next_use(layer, probs_THE, log_passes_LE.expand(num_tokens, -1, -1))


def true_next_use_tables(used_PLE: torch.Tensor, max_passes: int = MAX_PASSES) -> torch.Tensor:
    """[P, L, L, E] the exact next-use tables of a replayed trace: [p, l] is the table at clock (pass p, MoE layer
    l), in the layer-steps defined above, from `used_PLE[p, j, e]` (pass p requests (j, e)). Uses after the
    trace's end count as `max_passes` passes away. Fed to least-stale-predicted in place of a predictor's tables,
    they make it Belady's order (examples/next_use_gap.py's oracle row: the evictor's side is exact, what is left
    is the prediction's)."""
    num_passes, num_layers, _ = used_PLE.shape
    next_pass_PLE = torch.empty(used_PLE.shape, dtype=torch.long)
    upcoming_LE = torch.full(used_PLE.shape[1:], num_passes - 1 + max_passes, dtype=torch.long)
    for p in range(num_passes - 1, -1, -1):  # backwards: the next pass after p that uses (j, e)
        next_pass_PLE[p] = upcoming_LE
        upcoming_LE = torch.where(used_PLE[p], p, upcoming_LE)
    passes_P11 = torch.arange(num_passes).view(num_passes, 1, 1)
    tables = []
    for layer in range(num_layers):
        tables.append(next_use_distance(layer, None, next_pass_PLE - passes_P11, 0, used_NLE=used_PLE.bool()))
    return torch.stack(tables, dim=1)


def rank_correlation(
    predicted_NX: torch.Tensor, true_NX: torch.Tensor, mask_NX: torch.Tensor | None = None
) -> torch.Tensor:
    """[N] Spearman correlation per row (ties broken by position; enough to compare estimators), over the entries
    where `mask_NX` is true (all if None); a row with fewer than two such entries gives 0."""
    mask_NX = torch.ones_like(true_NX, dtype=torch.bool) if mask_NX is None else mask_NX

    def ranks(x_NX: torch.Tensor) -> torch.Tensor:
        # masked-out entries rank last, so the kept ones take ranks 0..m-1 among themselves
        return x_NX.float().masked_fill(~mask_NX, float("inf")).argsort(-1).argsort(-1).float()

    kept_NX = mask_NX.float()
    count_N1 = kept_NX.sum(-1, keepdim=True).clamp(min=1)
    a_NX, b_NX = ranks(predicted_NX), ranks(true_NX)
    a_NX = (a_NX - (a_NX * kept_NX).sum(-1, keepdim=True) / count_N1) * kept_NX
    b_NX = (b_NX - (b_NX * kept_NX).sum(-1, keepdim=True) / count_N1) * kept_NX
    return (a_NX * b_NX).sum(-1) / (a_NX.norm(dim=-1) * b_NX.norm(dim=-1)).clamp(min=1e-12)


@torch.no_grad()
def next_use_quality(
    estimators: dict, split, hidden_layers: list[int], num_experts: int, batch_size: int = 2048
) -> dict[str, float]:
    """Mean Spearman correlation between each estimator's next-use table and the true one, over validation
    tokens and source layers, counting only the experts the sequence used within the last MAX_PASSES passes (the
    ones an evictor compares, and the ones the head is fitted on: `resident_weight`).
    `estimators[name](layer, hidden_ND) -> [N, L, E]` layer-steps."""
    targets = next_use_targets(split, num_experts)
    view = split.with_format("torch", columns=["hidden", "expert_ids"])
    sums = dict.fromkeys(estimators, 0.0)
    count = 0
    for start in range(0, len(view), batch_size):
        batch = view[start : start + batch_size]
        passes_NLE = targets["passes_NLE"][start : start + batch_size]
        recent_NX = resident_weight(targets["since_NLE"][start : start + batch_size]).flatten(1) > 0
        for index, l in enumerate(hidden_layers):
            true_NX = next_use_distance(l, batch["expert_ids"], passes_NLE, num_experts).flatten(1)
            for name, estimate in estimators.items():
                predicted_NX = estimate(l, batch["hidden"][:, index].float()).flatten(1)
                sums[name] += float(rank_correlation(predicted_NX, true_NX, recent_NX).sum())
            count += len(true_NX)
    return {name: total / max(count, 1) for name, total in sums.items()}
