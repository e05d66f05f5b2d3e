"""Honest export: what the exported bank gains over router reuse and the frequency baseline, and whether training
beat the predictor's starting point, said plainly in the CLI output, the bank's config.json and its card.

    gains = recall_gains(rows, "trained (residual)")      # per (layer, horizon): trained, baselines and the gains
    verdict = training_verdict(initial_recall, best_recall, kept_initial, kind)
    print_gain_table(gains); print(verdict["message"])
    card = bank_card(name, kind, verdict, gains)            # the bank's README.md

`rows` are train/report.py's recall rows on the validation split. A gain is trained recall minus the baseline's
(positive: the bank predicts better). The verdict compares the validation recall of the exported weights with
the one measured before the first training step (router reuse for the residual kind, a random init otherwise).
"""

from __future__ import annotations

BASELINES = ("router-reuse", "frequency")


def recall_gains(rows: list[dict], trained: str) -> list[dict]:
    """Per (layer, horizon) row: the trained recall, each baseline's, and `gain_vs_<baseline>` = trained - it."""
    out = []
    for row in rows:
        gain = {"layer": row["layer"], "horizon": row["horizon"], "trained": row[trained]}
        for name in BASELINES:
            if name in row:
                gain[name] = row[name]
                gain[f"gain_vs_{name}"] = row[trained] - row[name]
        out.append(gain)
    return out


def training_verdict(initial_recall: float, best_recall: float | None, kept_initial: bool, kind: str) -> dict:
    """Did training beat the starting point on validation? A dict with the numbers and a one-line message."""
    start = "router reuse (the residual kind's initialization)" if kind == "residual" else "its random initialization"
    if kept_initial:
        message = (
            f"TRAINING DID NOT BEAT ITS STARTING POINT: the exported bank is the initialization, {start} "
            f"(validation recall {initial_recall:.4f}; the best trained checkpoint scored "
            f"{'nothing' if best_recall is None else f'{best_recall:.4f}'})"
        )
    else:
        message = (
            f"training beat its starting point: validation recall {initial_recall:.4f} ({start}) -> "
            f"{best_recall:.4f} (+{best_recall - initial_recall:.4f})"
        )
    return {
        "beat_initialization": not kept_initial,
        "initial_recall": initial_recall,
        "best_recall": best_recall,
        "starting_point": start,
        "message": message,
    }


def print_gain_table(gains: list[dict], title: str, decoder_indices=None) -> None:
    """A rich table of recall gains over the baselines; negative gains in red. The source layer is named
    "MoE layer l (decoder layer d)" with the adapter's `decoder_indices`."""
    from rich.console import Console
    from rich.table import Table

    from specmd_predict.layer_names import layer_name

    columns = [c for c in ("gain_vs_router-reuse", "gain_vs_frequency") if gains and c in gains[0]]
    table = Table(title=title)
    for column in ("horizon", "source layer", "trained", *columns):
        table.add_column(column, justify="right")
    for row in gains:
        cells = [f"[red]{row[c]:+.4f}[/red]" if row[c] < 0 else f"{row[c]:+.4f}" for c in columns]
        style = "cyan" if row["layer"] == "mean" else None
        layer = "mean" if row["layer"] == "mean" else layer_name(row["layer"], decoder_indices)
        table.add_row(str(row["horizon"]), layer, f"{row['trained']:.4f}", *cells, style=style)
    Console().print(table)


def bank_card(name: str, kind: str, verdict: dict, gains: list[dict], extra_lines: list[str] = ()) -> str:
    """The bank's README.md: what it is, whether training helped, and its recall gains per horizon."""
    means = [g for g in gains if g["layer"] == "mean"]
    lines = [
        f"# Predictor bank `{name}` ({kind})",
        "",
        verdict["message"][0].upper() + verdict["message"][1:] + ".",
        "",
        "Validation recall@K, mean over source layers (per layer: config.json, extra.recall_gains):",
        "",
        "| horizon | trained | router reuse | gain | frequency | gain |",
        "|---|---|---|---|---|---|",
    ]
    for g in means:
        lines.append(
            f"| {g['horizon']} | {g['trained']:.4f} | {g.get('router-reuse', float('nan')):.4f} | "
            f"{g.get('gain_vs_router-reuse', float('nan')):+.4f} | {g.get('frequency', float('nan')):.4f} | "
            f"{g.get('gain_vs_frequency', float('nan')):+.4f} |"
        )
    lines += ["", *extra_lines, "Load it with `specmd_predict.predictors.load_predictors(path)`."]
    return "\n".join(lines) + "\n"
