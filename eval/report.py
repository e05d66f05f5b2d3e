"""Reports of the cache benchmark: rich terminal table, CSV, JSON, PNG plots, and an optional W&B run.

    table = results_table(rows); Console().print(table)
    write_csv(rows, out / "cache.csv"); write_json(payload, out / "cache.json")
    plot_hit_rate_vs_capacity(rows, out / "hit_rate_vs_capacity.png")
    plot_layer_collision_rate(results, out / "layer_collision_rate.png")
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
            cells += [str(r["late_prefetches"]), f"{r['prefetch_precision']:.2f}" if on else "",
                      f"{r['prefetch_recall']:.2f}" if on else ""]
        cells.append(_fmt_bytes(r["bytes_moved"]))
        if timed:
            cells += [f"{r.get('stall_s', 0):.3f}", f"{1e3 * r.get('ttft_s', 0):.2f}",
                      f"{1e3 * r.get('tpot_s', 0):.3f}"]
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


def plot_hit_rate_vs_capacity(rows: Sequence[dict], path: Path) -> Path:
    """Hit rate against capacity fraction, one line per (eviction, prefetch), one panel per layout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = sorted({r["layout"] for r in rows})
    fig, axes = plt.subplots(1, len(layouts), figsize=(6.5 * len(layouts), 4.5), squeeze=False)
    for ax, layout in zip(axes[0], layouts, strict=True):
        series: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            if r["layout"] == layout:
                label = r["eviction"] if r["prefetch"] == "none" else f"{r['eviction']} + {r['prefetch']}"
                series.setdefault(label, []).append((r["capacity_fraction"], r["hit_rate"]))
        for label, points in sorted(series.items()):
            points.sort()
            style = {"color": "black", "linestyle": "--", "linewidth": 2} if label.startswith("belady") else {}
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label, **style)
        ax.set_xscale("log")
        ticks = sorted({r["capacity_fraction"] for r in rows if r["layout"] == layout})
        ax.set_xticks(ticks, [f"{t:.0%}" if t >= 0.01 else f"{t:.1%}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("capacity (share of all expert bytes)")
        ax.set_ylabel("hit rate")
        ax.set_title(f"{layout} cache")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    path = _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_layer_collision_rate(results: Sequence, path: Path) -> Path:
    """Per-layer collision rate (collision misses / requests) of each policy, one panel per capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    capacities = sorted({r.capacity_fraction for r in results})
    fig, axes = plt.subplots(1, len(capacities), figsize=(5.5 * len(capacities), 4), squeeze=False)
    for ax, capacity in zip(axes[0], capacities, strict=True):
        for r in results:
            if r.capacity_fraction == capacity and r.layout == "global":
                label = r.eviction if r.prefetch == "none" else f"{r.eviction} + {r.prefetch}"
                rates = r.stats.layer_collision_rate()
                ax.plot(range(len(rates)), rates, marker=".", label=label)
        ax.set_xlabel("MoE layer")
        ax.set_ylabel("collision misses / requests")
        ax.set_title(f"global cache, {capacity:.1%} of expert bytes")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    path = _save_figure(fig, path)
    plt.close(fig)
    return path


def log_wandb(payload: dict, images: Sequence[Path], project: str = "specmd-predict", run_dir: Path | None = None):
    """Log the rows as a W&B table and the plots as images. Offline unless WANDB_MODE is set otherwise."""
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    run = wandb.init(project=project, config=payload.get("config", {}), dir=str(run_dir) if run_dir else None,
                     job_type="cache-benchmark", reinit="finish_previous")
    rows = payload["rows"]
    if rows:
        columns = list(rows[0])
        run.log({"cache_benchmark": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})
    run.log({Path(p).stem: wandb.Image(str(p)) for p in images})
    run.finish()
    return run
