"""The shift table of `specmd-eval` on a generation-mode harvest: every predictor's recall on prefill rows and on
decode rows, side by side (a predictor trained on one phase, judged on both, shows the shift).

    from eval.phase_shift import phase_shift_rows, shift_table
    rows = phase_shift_rows(predictors, harvest.validation, adapter=adapter)   # predictor x phase x horizon
    console.print(shift_table(rows))

Rows are `eval.predictor_metrics` rows (mean over source layers) with an `evaluated_on` key ("prefill" or
"decode"). Decode rows are the model's own one-token passes with the KV cache, so a gap between the two
columns is the gap between teacher-forced training data and real decoding. To train the two predictors, see
examples/phase_shift.py (`data_pipelines.generate.phase_view` keeps one phase's rows of a harvest).
"""

from __future__ import annotations

from rich.table import Table

from data_pipelines.generate import PHASES, rows_of_phase
from eval.predictor_metrics import predictor_metric_rows


def phase_shift_rows(predictors, split, adapter=None, hidden_layers=None, ks=None, progress: bool = False) -> list:
    """Mean-over-layers metric rows of every predictor on each phase's rows of `split` (a phase column needed)."""
    rows = []
    for phase in PHASES:
        part = rows_of_phase(split, phase)
        if len(part) == 0:
            continue
        for row in predictor_metric_rows(predictors, part, adapter=adapter, hidden_layers=hidden_layers, ks=ks,
                                         progress=progress):  # fmt: skip
            if row["layer"] == "mean":
                rows.append({"evaluated_on": phase, **row})
    return rows


def shift_table(rows: list[dict]) -> Table:
    """Predictors down, (phase, horizon) across: recall@K (the model's top-k), mean over source layers."""
    metric = next((k for k in rows[0] if k.startswith("recall@")), None) if rows else None
    table = Table(title=f"Prefill vs decode shift: {metric} (mean over layers)")
    columns = sorted({(r["evaluated_on"], r["horizon"]) for r in rows}, key=lambda c: (PHASES.index(c[0]), c[1]))
    table.add_column("predictor", justify="left")
    for phase, horizon in columns:
        table.add_column(f"{phase} h={horizon}", justify="right")
    values = {(r["predictor"], r["evaluated_on"], r["horizon"]): r[metric] for r in rows}
    for name in dict.fromkeys(r["predictor"] for r in rows):
        table.add_row(name, *(f"{values[name, p, h]:.4f}" if (name, p, h) in values else "" for p, h in columns))
    return table
