"""Predictor metrics per (predictor, layer, horizon) on a harvest split: recall@k, precision@k, exact top-K set
match and average precision, for any set of predictor banks next to the router-reuse and frequency baselines.

    from eval.predictor_metrics import baseline_predictors, predictor_metric_rows
    predictors = baseline_predictors(adapter, harvest.train, horizon=3) | {"mybank": "outputs/banks/embedded-residual"}
    rows = predictor_metric_rows(predictors, harvest.validation, adapter=adapter, ks=(4, 8))

A row: {"predictor", "layer" (int, or "mean" over layers), "horizon", "num_tokens", "recall@k", "precision@k"
for each k, "exact_match", "average_precision"}.
- recall@k = |top-k(scores) & true| / K, precision@k = |top-k(scores) & true| / k (equal at k = K).
- exact_match: the predicted top-K set equals the true set.
- average_precision: scikit-learn's average_precision_score over all (token, expert) pairs of the layer and
  horizon ("micro"), i.e. how well the probabilities rank true selections; it grades probability thresholds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.predictors import ExpertPredictor, FrequencyPredictor, RouterReusePredictor, load_predictors
from specmd_predict.predictors.metrics import multi_hot
from specmd_predict.predictors.recall import LayerHorizonRecall
from specmd_predict.predictors.split_batches import split_batches


def baseline_predictors(adapter: MoEAdapter, train_split, horizon: int = 3) -> dict[str, ExpertPredictor]:
    """Router reuse (the model's own later routers) and frequency (counted on `train_split`)."""
    return {
        "router-reuse": RouterReusePredictor(adapter, horizon),
        "frequency": FrequencyPredictor.from_dataset(train_split, adapter.identity(), horizon),
    }


def resolve_predictors(
    predictors: Mapping[str, ExpertPredictor | str | os.PathLike], adapter: MoEAdapter | None = None
) -> dict[str, ExpertPredictor]:
    """Load the banks given as paths (checked against `adapter`'s model when given); keep objects as they are."""
    resolved = {}
    for name, predictor in predictors.items():
        if isinstance(predictor, (str, os.PathLike)):
            predictor = load_predictors(predictor, adapter=adapter)
        elif adapter is not None:
            predictor.check_model(adapter)
        resolved[name] = predictor
    return resolved


@torch.no_grad()
def predictor_metric_rows(
    predictors: Mapping[str, ExpertPredictor | str | os.PathLike],
    split,
    adapter: MoEAdapter | None = None,
    hidden_layers: list[int] | None = None,
    ks: tuple[int, ...] | None = None,
    batch_size: int = 4096,
    max_ap_tokens: int = 20_000,
    progress: bool = True,
) -> list[dict]:
    """Metrics of every predictor on every row of `split` (a harvested datasets.Dataset); see module doc."""
    predictors = resolve_predictors(predictors, adapter)
    if not predictors:
        raise ValueError("no predictors to evaluate")
    first = next(iter(predictors.values()))
    L, E, K = first.num_layers, first.num_experts, first.top_k
    for name, p in predictors.items():
        if (p.num_layers, p.num_experts, p.top_k) != (L, E, K):
            raise ValueError(f"predictor {name!r} is for a model of another shape than {next(iter(predictors))!r}")
    horizon = max(p.horizon for p in predictors.values())
    ks = (K,) if ks is None else tuple(int(k) for k in ks)
    bad = [k for k in ks if not 1 <= k <= E]
    if bad:
        raise ValueError(f"k must be in 1..{E} (the number of experts), got {bad}")
    hidden_layers = list(range(L)) if hidden_layers is None else list(hidden_layers)
    if len(split) == 0:
        raise ValueError("the split is empty: nothing to evaluate")

    # recall, precision and exact matches per predictor (the project's one recall metric); AP on the first tokens
    metrics = {n: LayerHorizonRecall(L, horizon, K, ks) for n in predictors}
    ap_scores: dict[tuple[str, int, int], list[torch.Tensor]] = {}
    ap_truth: dict[tuple[int, int], list[torch.Tensor]] = {}
    seen = 0
    for batch in split_batches(predictors.values(), split, L, batch_size, desc="predictor metrics", progress=progress):
        ids_NLK = batch.ids_NLK
        num_ap = max(0, min(len(ids_NLK), max_ap_tokens - seen))
        for index, l in enumerate(hidden_layers):
            if num_ap:
                for h in range(min(horizon, L - 1 - l)):
                    ap_truth.setdefault((l, h), []).append(multi_hot(ids_NLK[:num_ap, l + 1 + h], E))
            for name, predictor in predictors.items():
                probs_NHE = batch.predict(predictor, l, index).float().cpu()
                for h in range(probs_NHE.shape[1]):
                    metrics[name].update(l, h, probs_NHE[:, h], ids_NLK[:, l + 1 + h])
                    if num_ap:
                        ap_scores.setdefault((name, l, h), []).append(probs_NHE[:num_ap, h].half())
        seen += len(ids_NLK)

    rows = []
    num_tokens = len(split)
    for name, predictor in predictors.items():
        computed = metrics[name].result()
        for h in range(horizon):
            layers = [l for l in hidden_layers if predictor.horizon_at(l) > h]
            for l in layers:
                row = {"predictor": name, "layer": l, "horizon": h + 1, "num_tokens": num_tokens}
                for i, k in enumerate(ks):
                    row[f"recall@{k}"] = float(computed["recall"][i, l, h])
                    row[f"precision@{k}"] = float(computed["precision"][i, l, h])
                row["exact_match"] = float(computed["exact_match"][l, h])
                truth = torch.cat(ap_truth[(l, h)]).numpy().ravel()
                scores = torch.cat(ap_scores[(name, l, h)]).float().numpy().ravel()
                row["average_precision"] = float(average_precision_score(truth, scores))
                rows.append(row)
            if layers:
                per_layer = rows[-len(layers) :]
                mean = {k: float(np.mean([r[k] for r in per_layer])) for k in per_layer[0] if "@" in k}
                mean["exact_match"] = float(np.mean([r["exact_match"] for r in per_layer]))
                mean["average_precision"] = float(np.mean([r["average_precision"] for r in per_layer]))
                rows.append({"predictor": name, "layer": "mean", "horizon": h + 1, "num_tokens": num_tokens} | mean)
    return rows


def next_pass_rows(
    predictors: Mapping[str, ExpertPredictor],
    split,
    adapter: MoEAdapter,
    train_split,
    hidden_layers: list[int] | None = None,
) -> list[dict]:
    """Recall@K for MoE layer 0 of the next token, from MoE layer L-1's router input: every predictor with a
    next-pass head (with the next token and from the state alone, when its head has a token table), router reuse
    across the pass boundary and layer 0's frequency; on a generate-mode harvest also over the decode passes
    alone (`recall@K decode`). Empty when the split does not keep layer L-1's router input."""
    from specmd_predict.predictors.next_pass import next_pass_baselines, next_pass_recall, next_pass_scorers

    hidden_layers = list(range(adapter.num_layers)) if hidden_layers is None else list(hidden_layers)
    if adapter.num_layers - 1 not in hidden_layers:
        return []
    frequency_E = FrequencyPredictor.from_dataset(train_split, adapter.identity(), 1).frequency_LE[0]
    scorers = {}
    for name, p in predictors.items():
        if getattr(p, "predicts_next_pass", False) and isinstance(p, ExpertPredictor):
            own = next_pass_scorers(p)
            for how, scorer in own.items():
                scorers[name if len(own) == 1 else f"{name} {how.removeprefix('trained ')}"] = scorer
    scorers |= next_pass_baselines(adapter, frequency_E)
    last_index = hidden_layers.index(adapter.num_layers - 1)
    recall = next_pass_recall(scorers, split, last_index, adapter.top_k)
    rows = [{"predictor": name, f"recall@{adapter.top_k}": value} for name, value in recall.items()]
    if "phase" in split.column_names:
        decode = next_pass_recall(scorers, split, last_index, adapter.top_k, phase="decode")
        for row in rows:
            row[f"recall@{adapter.top_k} decode"] = decode[row["predictor"]]
    return rows


COST_SHAPES = ("olmoe-1b-7b", "mixtral-8x7b")  # real models whose shapes every bank's cost is also counted on


def cost_rows(
    predictors: Mapping[str, ExpertPredictor], adapter: MoEAdapter, shapes: tuple[str, ...] = COST_SHAPES
) -> list[dict]:
    """Each bank's FLOPs per token as a share of its MoE layer's (mean and max over source layers), split into the
    predictor and its heads, on this model and, for the same bank design (kind, horizon, ranks, heads), on the
    real shapes of `shapes` (eval/hardware.py): the share "<shape> mean_share"."""
    from specmd_predict.predictors.cost import predictor_cost

    rows = []
    for name, predictor in predictors.items():
        if isinstance(predictor, (RouterReusePredictor, FrequencyPredictor)):
            continue  # the baselines: the model's own routers, or a table lookup
        cost = predictor_cost(predictor, adapter)
        row = {
            "predictor": name,
            "moe_layer_flops": cost["moe_layer_flops"],
            "mean_share": cost["mean_share"],
            "max_share": cost["max_share"],
        }
        row |= {f"{part} mean_share": share for part, share in cost["mean_share_by_part"].items()}
        for shape_name in shapes:
            row[f"{shape_name} mean_share"] = shape_cost(predictor, shape_name)["mean_share"]
        rows.append(row)
    return rows


def shape_cost(predictor: ExpertPredictor, shape_name: str) -> dict:
    """`predictor_cost` of the same bank design on a real model's shapes (eval/hardware.py), counted on the meta
    device; the MoE layer there: its K experts' gate, up and down projections, its router and shared experts."""
    from eval.hardware import get_shape
    from specmd_predict.predictors.cost import predictor_cost, predictor_on_shape

    shape = get_shape(shape_name)
    twin = predictor_on_shape(predictor, shape.num_layers, shape.num_experts, shape.top_k, shape.hidden_size)
    return predictor_cost(twin, moe_flops=shape_moe_flops(shape))


def shape_moe_flops(shape) -> int:
    """FLOPs per token of one MoE layer of an eval/hardware.py ModelShape: K experts, the router, shared experts."""
    return (
        shape.top_k * shape.expert_flops_per_token
        + 2 * shape.num_experts * shape.hidden_size
        + 2 * 3 * shape.hidden_size * shape.shared_intermediate
    )
