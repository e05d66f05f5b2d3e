"""Recall@k of a predictor against what the routers really chose (../shared/DESIGN.md section 4).

recall = recall_at_k(scores_TE, true_ids_TK)          # |top-k(scores) & true| / K, mean over tokens
hits_T = topk_hits(scores_TE, true_ids_TK, k=8)       # per-token counts, for other metrics in eval/
"""

from __future__ import annotations

import torch


def multi_hot(ids_TK: torch.Tensor, num_experts: int) -> torch.Tensor:
    """[T, E] bool: True where the expert is among the token's ids."""
    out_TE = torch.zeros(ids_TK.shape[0], num_experts, dtype=torch.bool, device=ids_TK.device)
    return out_TE.scatter_(1, ids_TK.long(), True)


def topk_hits(scores_TE: torch.Tensor, true_ids_TK: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """[T] how many of the top-k scored experts were truly selected (k defaults to K)."""
    k = true_ids_TK.shape[-1] if k is None else int(k)
    if not 1 <= k <= scores_TE.shape[-1]:
        raise ValueError(f"k={k} must be in 1..{scores_TE.shape[-1]} (the number of experts)")
    predicted_Tk = scores_TE.topk(k, dim=-1).indices
    return multi_hot(true_ids_TK, scores_TE.shape[-1]).gather(1, predicted_Tk).sum(-1)


def recall_at_k(scores_TE: torch.Tensor, true_ids_TK: torch.Tensor, k: int | None = None) -> float:
    """Mean over tokens of |top-k(scores) & true| / K; with k = K (default) this is ../shared/DESIGN.md's recall@k."""
    if scores_TE.shape[0] != true_ids_TK.shape[0]:
        raise ValueError(f"{scores_TE.shape[0]} score rows but {true_ids_TK.shape[0]} rows of true ids")
    if scores_TE.shape[0] == 0:
        return float("nan")
    return float(topk_hits(scores_TE, true_ids_TK, k).float().mean() / true_ids_TK.shape[-1])
