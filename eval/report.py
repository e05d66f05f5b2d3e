"""Reports of the cache benchmark: rich terminal table, CSV, JSON, PNG plots, and an optional W&B run.

    table = results_table(rows); Console().print(table)
    write_csv(rows, out / "cache.csv"); write_json(payload, out / "cache.json")
    plot_hit_rate_vs_capacity(rows, out / "hit_rate_vs_capacity.png")
    plot_layer_collision_rate(results, out / "layer_collision_rate.png", decoder_indices)   # x: "i (d)"
    log_wandb(payload, [png paths], project="specmd-predict")      # offline unless WANDB_MODE says otherwise

`rows` are `SimResult.row()` dicts with `belady_hit_rate` filled in by `add_belady_columns`. Every file is
written to a temporary name and renamed, so an interrupted run leaves no half-written report.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from specmd_predict.io import atomic_file, atomic_write_text
from specmd_predict.layer_names import LAYER_AXIS, layer_tick


def add_belady_columns(rows: list[dict]) -> list[dict]:
    """Put the Belady hit rate of the same (prefetch, layout, capacity) next to every row, and the gap to it."""
    best = {
        (r["prefetch"], r["layout"], r["capacity_fraction"]): r["hit_rate"] for r in rows if r["eviction"] == "belady"
    }
    for r in rows:
        b = best.get((r["prefetch"], r["layout"], r["capacity_fraction"]))
        r["belady_hit_rate"] = b
        r["gap_to_belady"] = None if b is None else b - r["hit_rate"]
    return rows


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def results_table(rows: Sequence[dict], title: str = "Expert-cache benchmark") -> Table:
    """One line per (layout, capacity, prefetch, eviction), Belady's hit rate beside each; columns that would
    be constant or empty (one layout, no prefetching, no timing) are left out to keep it readable."""
    show_layout = len({r["layout"] for r in rows}) > 1
    show_prefetch = any(r["prefetch"] != "none" for r in rows)
    timed = any("tpot_s" in r for r in rows)
    columns = ["layout"] if show_layout else []
    columns += ["capacity", "prefetch", "eviction", "hit rate", "Belady", "misses", "collisions"]
    if show_prefetch:
        columns += ["late", "pf P", "pf R"]
    columns += ["moved"]
    if timed:
        columns += ["stall s", "TTFT ms", "TPOT ms"]
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c in ("layout", "prefetch", "eviction") else "right")
    for r in rows:
        belady = r.get("belady_hit_rate")
        cells = [r["layout"]] if show_layout else []
        cells += [
            f"{r['capacity_fraction']:.1%} ({r['num_slots']})",
            r["prefetch"],
            r["eviction"],
            f"{r['hit_rate']:.4f}",
            "" if belady is None else f"{belady:.4f}",
            str(r["misses"]),
            str(r["collision_misses"]),
        ]
        if show_prefetch:
            on = r["prefetch"] != "none"
            cells += [
                str(r["late_prefetches"]),
                f"{r['prefetch_precision']:.2f}" if on else "",
                f"{r['prefetch_recall']:.2f}" if on else "",
            ]
        cells.append(_fmt_bytes(r["bytes_moved"]))
        if timed:
            cells += [
                f"{r.get('stall_s', 0):.3f}",
                f"{1e3 * r.get('ttft_s', 0):.2f}",
                f"{1e3 * r.get('tpot_s', 0):.3f}",
            ]
        table.add_row(*cells)
    return table


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    path = Path(path)
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    with atomic_file(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_json(payload: dict, path: Path) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(payload, indent=2, default=str))
    return path


def _save_figure(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    return path


OURS = "least-stale-predicted"  # this project's evictor: highlighted in every plot
MAX_LINES = 9  # per panel; more evictions than this are left to the table and cache.csv
# distinct colours for the other evictors (tab10 without its red, kept for ours, and its grey)
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
_MARKERS = ["s", "^", "v", "D", "P", "X", "<", ">"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _evictions_to_draw(names: Sequence[str]) -> list[str]:
    """At most MAX_LINES evictions in first-seen order, Belady and ours always among them."""
    seen = list(dict.fromkeys(names))
    always = [n for n in (OURS, "belady") if n in seen]
    others = [n for n in seen if n not in always][: MAX_LINES - len(always)]
    return [n for n in seen if n in others or n in always]


def _line_style(eviction: str, index: int) -> dict:
    """Belady black and dashed, ours thick red on top, the others thin in distinct colours and markers."""
    if eviction == "belady":
        return {
            "color": "black",
            "linestyle": "--",
            "linewidth": 1.8,
            "marker": None,
            "label": "Belady (oracle)",
            "zorder": 4,
        }
    if eviction == OURS:
        return {
            "color": "#d62728",
            "linewidth": 3.0,
            "marker": "o",
            "markersize": 6,
            "zorder": 5,
            "label": f"{OURS} (ours)",
        }
    return {
        "color": _PALETTE[index % len(_PALETTE)],
        "linewidth": 1.2,
        "marker": _MARKERS[index % len(_MARKERS)],
        "markersize": 4,
        "alpha": 0.9,
        "label": eviction,
        "zorder": 3,
    }


def _styles(evictions: Sequence[str]) -> dict[str, dict]:
    others = [e for e in evictions if e not in ("belady", OURS)]
    return {e: _line_style(e, others.index(e) if e in others else 0) for e in evictions}


def _legend_outside(fig, axes) -> None:
    """One legend for the figure, to the right of every panel (the panels share their lines)."""
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    fig.legend(
        [handles[label] for label in labels],
        labels,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=9,
        frameon=False,
    )


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def plot_hit_rate_vs_capacity(rows: Sequence[dict], path: Path) -> Path:
    """Hit rate against capacity: one panel per prefetch policy (a row of panels per layout), one line per
    eviction (at most MAX_LINES), Belady dashed in every panel, ours highlighted, the legend outside."""
    plt = _pyplot()
    layouts = list(dict.fromkeys(r["layout"] for r in rows))
    prefetches = list(dict.fromkeys(r["prefetch"] for r in rows))
    evictions = _evictions_to_draw([r["eviction"] for r in rows])
    styles = _styles(evictions)
    fig, axes = plt.subplots(
        len(layouts), len(prefetches), figsize=(4.4 * len(prefetches), 3.6 * len(layouts)), squeeze=False, sharey=True
    )
    capacities = sorted({r["capacity_fraction"] for r in rows})
    for row_axes, layout in zip(axes, layouts, strict=True):
        for ax, prefetch in zip(row_axes, prefetches, strict=True):
            for eviction in evictions:
                points = sorted(
                    (r["capacity_fraction"], r["hit_rate"])
                    for r in rows
                    if (r["layout"], r["prefetch"], r["eviction"]) == (layout, prefetch, eviction)
                )
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], **styles[eviction])
            ax.set_xscale("log")
            ax.set_xticks(capacities, [_percent(c) for c in capacities])
            ax.minorticks_off()
            ax.set_title(f"prefetch: {prefetch}" + (f" ({layout} cache)" if len(layouts) > 1 else ""), fontsize=10)
            ax.set_xlabel("cache capacity (share of all expert bytes)", fontsize=9)
            ax.grid(True, alpha=0.3)
        row_axes[0].set_ylabel("hit rate")
    hidden = len(set(r["eviction"] for r in rows)) - len(evictions)
    title = "Expert-cache hit rate vs capacity" + (f" ({hidden} more evictors in cache.csv)" if hidden else "")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    _legend_outside(fig, axes.flat)
    path = _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_layer_collision_rate(results: Sequence, path: Path, decoder_indices: Sequence[int] | None = None) -> Path:
    """Collision misses / requests per MoE layer in the global cache: a row of panels per capacity, a column per
    prefetch policy, one line per eviction (at most MAX_LINES), styled and labelled like the hit-rate plot."""
    plt = _pyplot()
    results = [r for r in results if r.layout == "global"]
    capacities = sorted({r.capacity_fraction for r in results})
    prefetches = list(dict.fromkeys(r.prefetch for r in results))
    evictions = _evictions_to_draw([r.eviction for r in results])
    styles = _styles(evictions)
    fig, axes = plt.subplots(
        max(len(capacities), 1),
        max(len(prefetches), 1),
        squeeze=False,
        sharex=True,
        sharey="row",
        figsize=(4.4 * max(len(prefetches), 1), 2.6 * max(len(capacities), 1)),
    )
    for row_axes, capacity in zip(axes, capacities, strict=True):
        for ax, prefetch in zip(row_axes, prefetches, strict=True):
            for eviction in evictions:
                for r in results:
                    if (r.capacity_fraction, r.prefetch, r.eviction) == (capacity, prefetch, eviction):
                        rates = r.stats.layer_collision_rate()
                        ax.plot(range(len(rates)), rates, **styles[eviction])
            ax.set_title(f"{_percent(capacity)} capacity, prefetch: {prefetch}", fontsize=9)
            ax.grid(True, alpha=0.3)
        row_axes[0].set_ylabel("collision misses\n/ requests", fontsize=9)
    num_layers = max((len(r.stats.layer_collision_rate()) for r in results), default=0)
    for ax in axes[-1]:
        ax.set_xticks(range(num_layers), [layer_tick(i, decoder_indices) for i in range(num_layers)], fontsize=8)
        ax.set_xlabel(LAYER_AXIS, fontsize=9)
    fig.suptitle("Collision misses per layer (global cache): evicted earlier in the same pass", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    _legend_outside(fig, axes.flat)
    path = _save_figure(fig, path)
    plt.close(fig)
    return path


def log_wandb(payload: dict, images: Sequence[Path], project: str = "specmd-predict", run_dir: Path | None = None):
    """Log the rows as a W&B table and the plots as images. Offline unless WANDB_MODE is set otherwise."""
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    run = wandb.init(
        project=project,
        config=payload.get("config", {}),
        dir=str(run_dir) if run_dir else None,
        job_type="cache-benchmark",
        reinit="finish_previous",
    )
    rows = payload["rows"]
    if rows:
        columns = list(rows[0])
        run.log({"cache_benchmark": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})
    run.log({Path(p).stem: wandb.Image(str(p)) for p in images})
    run.finish()
    return run


def log_wandb_run_folder(run_info: dict, rows: list[dict], folder: Path, project: str = "specmd-predict"):
    """Log a finished run folder (the eval and trace-replay CLIs): its run info as config, the cache rows,
    and every plot (*.png) written in it."""
    return log_wandb({"config": run_info, "rows": rows}, sorted(folder.glob("*.png")), project=project, run_dir=folder)
