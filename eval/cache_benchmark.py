"""The trace-driven cache benchmark of `specmd-eval`: every eviction x prefetch x capacity (x layout), reported.

    from eval.cache_benchmark import run_cache_benchmark
    out = run_cache_benchmark(trace, output_dir=Path("outputs/eval/run1"), predictor=router_reuse)
    out["rows"]   # one flat dict per configuration (SimResult.row() + Belady's hit rate beside it)

Belady always runs (it is the bound each row is shown against). Prefetch policies other than "none" need a
`predictor` (an object with `.predict(layer, hidden_TD)`) and a trace with hidden states; without them they
are skipped with a note, not an error. Writes cache.csv, cache.json, hit_rate_vs_capacity.png and
layer_collision_rate.png under `output_dir`, prints the rich table, and logs to W&B when `wandb=True`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from tqdm import tqdm

from eval.hardware import HardwareProfile, ModelShape, get_profile, get_shape
from eval.report import (
    add_belady_columns,
    log_wandb,
    plot_hit_rate_vs_capacity,
    plot_layer_collision_rate,
    results_table,
    write_csv,
    write_json,
)
from eval.simulate import SimResult, simulate
from eval.trace import Trace
from runtime.policies import EVICTION_POLICIES, PREFETCH_POLICIES, make_eviction, make_prefetch

DEFAULT_EVICTIONS = (
    "lru",
    "lfu",
    "fifo",
    "fld",
    "score",
    "least-stale-layer-order",
    "least-stale-reverse",
    "least-stale-predicted",
    "least-stale-predicted-heuristic",
    "belady",
)
DEFAULT_CAPACITIES = (0.025, 0.05, 0.10, 0.15, 0.25, 0.50)


def run_cache_benchmark(
    trace: Trace,
    output_dir: Path | None = None,
    evictions: Sequence[str] = DEFAULT_EVICTIONS,
    prefetches: Sequence[str] = ("none", "router-reuse"),
    capacities: Sequence[float | int] = DEFAULT_CAPACITIES,
    layouts: Sequence[str] = ("global",),
    predictor=None,
    prefetch_kwargs: dict | None = None,
    eviction_kwargs: dict | None = None,
    hardware: str | None = "pcie4-x16",
    shape: str | ModelShape | None = None,
    expert_bytes: int | None = None,
    wandb: bool = False,
    console: Console | None = None,
    progress: bool = True,
    decoder_indices: Sequence[int] | None = None,
) -> dict:
    """Run the grid, print the table, write the reports; returns {"rows", "results", "skipped", "files"}.

    Capacities below one layer's needs (top-k slots) are skipped with a note rather than failing the grid
    (1% of a small model's experts can be fewer than k); a grid where every capacity is too small raises.
    `shape` (a preset name of eval.hardware.SHAPES or a ModelShape) enables timing with `hardware`; without
    it the harvest's expert bytes are used and no timing is reported. `predictor` is one object for every
    prefetch policy, or a mapping {prefetch name: predictor}. `decoder_indices` (the adapter's) name the layers
    of the per-layer plot "MoE layer i (decoder layer d)".
    """
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
            console = Console(width=160)
    for name in evictions:
        if name not in EVICTION_POLICIES:
            make_eviction(name)  # raises the registry's "did you mean" error
    for name in prefetches:
        if name not in PREFETCH_POLICIES:
            make_prefetch(name)
    evictions = list(evictions) + ([] if "belady" in evictions else ["belady"])
    profile = get_profile(hardware) if hardware and shape else None
    model_shape = get_shape(shape) if isinstance(shape, str) else shape
    predictors = predictor if isinstance(predictor, Mapping) else dict.fromkeys(prefetches, predictor)

    skipped: list[str] = []
    usable_prefetches = []
    for name in prefetches:
        predictor_of = predictors.get(name)
        from_routing = getattr(predictor_of, "uses_routing", False)  # a routing-only bank reads the trace's ids
        if name != "none" and (predictor_of is None or (trace.hidden_NLD is None and not from_routing)):
            skipped.append(f"prefetch {name}: needs a predictor and a trace with hidden states")
        else:
            usable_prefetches.append(name)

    grid = [
        (lay, cap, pre, ev) for lay in layouts for cap in capacities for pre in usable_prefetches for ev in evictions
    ]
    settings = GridSettings(
        trace, predictors, profile, model_shape, expert_bytes, eviction_kwargs or {}, prefetch_kwargs or {}
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # predictors run per pass on a token or a prompt: threads only add overhead (4x here)
    try:
        results = _run_grid(grid, settings, skipped, progress)
    finally:
        torch.set_num_threads(threads)
    if not results:
        raise ValueError("no configuration could run: " + "; ".join(skipped))

    rows = add_belady_columns([r.row() for r in results])
    console.print(results_table(rows, title=f"Expert-cache benchmark ({trace.describe()['num_requests']} requests)"))
    for note in skipped:
        console.print(f"[yellow]skipped[/yellow] {note}")

    payload = {
        "config": {
            "evictions": evictions,
            "prefetches": list(prefetches),
            "capacities": list(capacities),
            "layouts": list(layouts),
            "hardware": hardware if profile else None,
            "shape": model_shape.name if model_shape else None,
            "prefetch_kwargs": prefetch_kwargs or {},
            "eviction_kwargs": eviction_kwargs or {},
            "trace": trace.describe(),
        },
        "rows": rows,
        "per_layer": [
            r.as_dict()["per_layer"]
            | {
                "eviction": r.eviction,
                "prefetch": r.prefetch,
                "layout": r.layout,
                "capacity_fraction": r.capacity_fraction,
            }
            for r in results
        ],
        "skipped": skipped,
    }
    files: list[Path] = []
    if output_dir is not None:
        out = Path(output_dir)
        files = [write_csv(rows, out / "cache.csv"), write_json(payload, out / "cache.json")]
        images = [
            plot_hit_rate_vs_capacity(rows, out / "hit_rate_vs_capacity.png"),
            plot_layer_collision_rate(results, out / "layer_collision_rate.png", decoder_indices),
        ]
        files += images
        if wandb:
            log_wandb(payload, images, run_dir=out)
    return {"rows": rows, "results": results, "skipped": skipped, "files": files}


def run_configured_benchmark(config, trace: Trace, output_dir: Path, prefetch_kwargs: dict | None = None, **kwargs):
    """`run_cache_benchmark` with the grid and prefetch options of an eval config (eval/cli.py's EvalConfig; the
    harvest and the trace commands share them): evictions, capacities, layouts, hardware, progress, and the
    prefetch horizon with either its threshold or its top-k. `prefetch_kwargs` adds policy options; `kwargs` go
    to `run_cache_benchmark` (prefetches, predictor, shape, console, ...)."""
    prefetch_kwargs = {"horizon": config.prefetch_horizon} | (prefetch_kwargs or {})
    if config.prefetch_threshold is not None:
        prefetch_kwargs["threshold"] = config.prefetch_threshold
    elif config.prefetch_top_k is not None:
        prefetch_kwargs["top_k"] = config.prefetch_top_k
    return run_cache_benchmark(
        trace,
        output_dir,
        evictions=config.evictions,
        capacities=config.capacities,
        layouts=config.layouts,
        hardware=config.hardware,
        prefetch_kwargs=prefetch_kwargs,
        wandb=False,
        progress=config.progress,
        **kwargs,
    )


@dataclass(frozen=True)
class GridSettings:
    """What every simulation of one grid shares (everything but layout, capacity and the two policies)."""

    trace: Trace
    predictors: Mapping  # prefetch name -> predictor (or None)
    profile: HardwareProfile | None  # None: no timing
    model_shape: ModelShape | None
    expert_bytes: int | None
    eviction_kwargs: dict
    prefetch_kwargs: dict


def _run_grid(
    grid: list[tuple[str, float | int, str, str]], settings: GridSettings, skipped: list[str], progress: bool
) -> list[SimResult]:
    """Simulate each (layout, capacity, prefetch, eviction); a capacity below one layer's needs is skipped (with a
    note in `skipped`) for the rest of the grid."""
    results: list[SimResult] = []
    too_small: set[tuple[str, float | int]] = set()
    proposals: dict[str, dict] = {}  # prefetch answers depend on the trace only: computed once per policy
    for layout, capacity, prefetch, eviction in tqdm(grid, desc="cache grid", disable=not progress):
        if (layout, capacity) in too_small:
            continue
        try:
            results.append(
                simulate(
                    settings.trace,
                    eviction,
                    prefetch,
                    capacity,
                    layout=layout,
                    expert_bytes=settings.expert_bytes,
                    hardware=settings.profile,
                    shape=settings.model_shape,
                    predictor=settings.predictors.get(prefetch),
                    eviction_kwargs=settings.eviction_kwargs,
                    prefetch_kwargs=settings.prefetch_kwargs,
                    proposals=proposals.setdefault(prefetch, {}),
                )
            )
        except ValueError as err:
            if "below one" not in str(err):
                raise
            too_small.add((layout, capacity))
            skipped.append(f"{layout} capacity {capacity}: {err}")
    return results
