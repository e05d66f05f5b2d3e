"""Recall@K per (layer, horizon) on a harvest split, for several predictors side by side, as rows and a table.

    rows = recall_rows({"trained": bank, "router-reuse": reuse, "frequency": freq}, harvest.validation,
                       hidden_layers=manifest["hidden_layers"])
    print_recall_table(rows)          # rich table, one row per (layer, horizon) plus a mean row per horizon

A row: {"layer": l or "mean", "horizon": h, "<predictor name>": recall, ...}.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from specmd_predict.predictors import ExpertPredictor
from specmd_predict.predictors.recall import LayerHorizonRecall
from specmd_predict.predictors.split_batches import split_batches


@torch.no_grad()
def recall_rows(
    predictors: Mapping[str, ExpertPredictor],
    split,
    hidden_layers: list[int] | None = None,
    batch_size: int = 4096,
    progress: bool = True,
) -> list[dict]:
    """Recall@K of each predictor on every row of `split` (a harvested datasets.Dataset)."""
    first = next(iter(predictors.values()))
    num_layers, horizon, top_k = first.num_layers, first.horizon, first.top_k
    hidden_layers = list(range(num_layers)) if hidden_layers is None else list(hidden_layers)
    metrics = {name: LayerHorizonRecall(num_layers, horizon, top_k) for name in predictors}
    for batch in split_batches(predictors.values(), split, num_layers, batch_size, desc="recall", progress=progress):
        for index, l in enumerate(hidden_layers):
            for name, predictor in predictors.items():
                probs_NHE = batch.predict(predictor, l, index).cpu()
                for h in range(probs_NHE.shape[1]):
                    metrics[name].update(l, h, probs_NHE[:, h], batch.ids_NLK[:, l + 1 + h])
    recall = {name: metric.result()["recall"][0] for name, metric in metrics.items()}
    rows = []
    for h in range(horizon):
        layers = [l for l in hidden_layers if first.horizon_at(l) > h]
        for l in layers:
            rows.append({"layer": l, "horizon": h + 1} | {n: float(recall[n][l, h]) for n in recall})
        if layers:
            mean = {n: sum(r[n] for r in rows[-len(layers) :]) / len(layers) for n in recall}
            rows.append({"layer": "mean", "horizon": h + 1} | mean)
    return rows


def print_recall_table(rows: list[dict], title: str = "validation recall@K", decoder_indices=None) -> None:
    """A rich table of `recall_rows` output; the best value of each row in bold. The source layer is named
    "MoE layer l (decoder layer d)" with the adapter's `decoder_indices`."""
    from rich.console import Console
    from rich.table import Table

    from specmd_predict.layer_names import layer_name

    names = [k for k in rows[0] if k not in ("layer", "horizon")] if rows else []
    table = Table(title=title)
    for column in ("horizon", "source layer", *names):
        table.add_column(column, justify="right")
    for row in rows:
        best = max(row[n] for n in names)
        cells = [f"[bold]{row[n]:.4f}[/bold]" if row[n] == best else f"{row[n]:.4f}" for n in names]
        style = "cyan" if row["layer"] == "mean" else None
        layer = "mean" if row["layer"] == "mean" else layer_name(row["layer"], decoder_indices)
        table.add_row(str(row["horizon"]), layer, *cells, style=style)
    Console().print(table)
