"""`specmd-eval`: predictor metrics and the trace-driven expert-cache benchmark on a harvest (default: embedded).

    specmd-eval                                        # embedded model + corpus: harvest (reused), both tables
    specmd-eval --harvest outputs/harvests/embedded-1a2b3c4d --banks '[outputs/banks/embedded-residual]'
    specmd-eval --config eval.yaml --capacities '[0.05, 0.25]' --layouts '[global, per-layer]' --no-wandb
    specmd-eval --max-sequences 20 --metrics false --evictions '[lru, least-stale, belady]'   # dashes work too
    specmd-eval --print_config > eval.yaml              # every option with its default
    specmd-eval --trace examples/routing_trace.jsonl --capacities '[0.25, 0.5]'   # routing logged elsewhere

Without --harvest the default harvest of `specmd-harvest` (embedded model on the stdlib corpus) is made or
reused. Predictor metrics cover the baselines (router reuse, frequency) and every bank in --banks; the cache
benchmark replays the split through every eviction x prefetch x capacity, with Belady beside each row.
On a `specmd-harvest --mode generate` harvest it also prints the prefill-vs-decode shift table (shift.csv) and
replays each decode token as its own pass. Outputs go to --output-dir (default outputs/eval/<harvest
name>-<time>): metrics.csv, cache.csv, cache.json, PNG plots, run.json (config, versions, git commit), written
to a hidden temp folder that becomes --output-dir only when the run ends (an earlier run there is moved aside
to <dir>.old-<UTC time>). W&B runs offline unless WANDB_MODE says otherwise; --no-wandb turns it off (every
boolean option has its --no- form); library warnings and info lines appear only with --verbose. Bad input
prints one line `specmd-eval: error: ...` and exits with status 2.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from jsonargparse import ArgumentParser
from rich.console import Console
from rich.table import Table

from eval.cache_benchmark import DEFAULT_CAPACITIES, DEFAULT_EVICTIONS, run_configured_benchmark
from eval.report import write_csv, write_json
from specmd_predict.cli_options import (
    check_at_least,
    check_between,
    config_parser,
    normalize_options,
    quiet_libraries,
)
from specmd_predict.io import fresh_output_dir, git_commit, is_temp_name, versions

PROG = "specmd-eval"
DEFAULT_BANK_ROOT = Path("outputs/banks")  # where `specmd-train` exports by default
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class EvalConfig:
    """Measure expert predictors and benchmark expert-cache policies on a harvested routing trace.

    Args:
        harvest: Folder of a finished harvest; default: the default `specmd-harvest` (embedded), made if missing.
        trace: Routing trace logged elsewhere (.parquet, .jsonl, or a saved `datasets` folder; schema in the
            README) to replay through the cache benchmark instead of a harvest; policies that need hidden
            states are reported as unavailable; a routing-only bank in --banks is its learned prefetcher.
        num_experts: Experts per MoE layer of --trace, when the trace has no num_experts column.
        split: Harvest split to evaluate on: validation, train, or all.
        max_sequences: Use only the first N sequences of the split (faster runs); default all.
        metrics: Compute the predictor metrics table.
        banks: Predictor bank folders to evaluate next to the router-reuse and frequency baselines; default:
            every bank under outputs/banks/ trained for the harvested model (what `specmd-train` exported).
        horizon: Layers ahead the baselines predict (1..L-1); default: the largest horizon of the banks evaluated
            (read from each bank), or 3 clamped to L-1 without banks.
        ks: k values of recall@k / precision@k; default the model's top-k.
        cache: Run the expert-cache benchmark.
        evictions: Eviction policies (Belady is always added as the bound).
        prefetches: Prefetch policies: none, router-reuse, score-percentile, predictor; default none and
            router-reuse, plus predictor when a bank is given or found.
        capacities: Cache sizes, each bytes (int) or a fraction of all expert bytes (float).
        layouts: global (one cache for all layers) and/or per-layer (mixtral-offloading style).
        overfetch: router-reuse: top-k x overfetch experts of the next layer.
        percentile: score-percentile: prefetch experts above this percentile of predicted scores.
        prefetch_bank: Bank the `predictor` prefetch uses; default the first of `banks`, else router reuse with
            `prefetch_horizon`.
        prefetch_horizon: predictor prefetch: layers ahead (1..H).
        prefetch_top_k: predictor prefetch: per-token top-k (default the model's top-k unless a threshold is set).
        prefetch_threshold: predictor prefetch: probability threshold instead of top-k.
        hardware: Hardware profile of the timing model (pcie4-x16, pcie5-x16, a100-pcie, h100-pcie, gh200-c2c,
            rtx4090).
        shape: Model shape for timing (olmoe-1b-7b, mixtral-8x7b, embedded); default the harvested model's config.
        output_dir: Where reports go; default outputs/eval/<harvest name>-<UTC time>.
        wandb: Log tables and plots to W&B (offline unless WANDB_MODE is set); --no-wandb turns it off.
        wandb_project: W&B project name.
        progress: Show progress bars.
    """

    harvest: str | None = None
    trace: str | None = None
    num_experts: int | None = None
    split: str = "validation"
    max_sequences: int | None = None
    metrics: bool = True
    banks: list[str] = field(default_factory=list)
    horizon: int | None = None
    ks: list[int] | None = None
    cache: bool = True
    evictions: list[str] = field(default_factory=lambda: list(DEFAULT_EVICTIONS))
    prefetches: list[str] | None = None
    capacities: list[int | float] = field(default_factory=lambda: list(DEFAULT_CAPACITIES))
    layouts: list[str] = field(default_factory=lambda: ["global"])
    overfetch: float = 1.0
    percentile: float = 80.0
    prefetch_bank: str | None = None
    prefetch_horizon: int = 1
    prefetch_top_k: int | None = None
    prefetch_threshold: float | None = None
    hardware: str = "pcie4-x16"
    shape: str | None = None
    output_dir: str | None = None
    wandb: bool = True
    wandb_project: str = "specmd-predict"
    progress: bool = True


def build_parser() -> ArgumentParser:
    return config_parser(PROG, EvalConfig, fail_untyped=True)


def _load_model(manifest: dict):
    """The harvested model (local files only) and its adapter, for router reuse and the shape."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download
    from data_pipelines import HarvestConfig
    from data_pipelines.model import load_model

    known = {f.name for f in fields(HarvestConfig)}
    args = {k: v for k, v in manifest.get("args", {}).items() if k in known}
    loaded = load_model(HarvestConfig(**{**args, "device": "cpu", "progress": False}))
    return loaded.model, loaded.adapter


def _discover_banks(adapter, root: Path = DEFAULT_BANK_ROOT, say=print) -> list[str]:
    """Sound bank folders under `root` whose recorded model identity is the harvested model's.

    Hidden folders (banks being written or swapped out: `.<name>.tmp-*`) are skipped silently; a damaged bank
    is skipped with one line naming it (`say`), never used; folders with no bank config are not banks.
    """
    from specmd_predict.predictors import BankError, verify_bank
    from specmd_predict.predictors.bank import CONFIG_NAME

    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if is_temp_name(folder.name) or not (folder / CONFIG_NAME).is_file():
            continue
        try:
            identity = verify_bank(folder).get("identity")
        except BankError as err:
            say(f"skipped a damaged bank: {err}")
            continue
        if identity == adapter.identity():
            found.append(str(folder))
    return found


def _bank_kind(path: str) -> str:
    from specmd_predict.predictors import read_bank_config

    return read_bank_config(path)["kind"]


def bank_horizon(banks: list[str], num_layers: int) -> int:
    """The baselines' horizon when none is given: the largest of the banks', else 3 clamped to L - 1."""
    from specmd_predict.predictors import read_bank_config

    horizons = [int(read_bank_config(b)["horizon"]) for b in banks]
    return max(horizons) if horizons else max(1, min(3, num_layers - 1))


def _metrics_table(rows: list[dict]) -> Table:
    table = Table(title="Predictor metrics (mean over layers)")
    keys = [k for k in rows[0] if k not in ("predictor", "layer", "horizon", "num_tokens")] if rows else []
    for c in ["predictor", "horizon", *keys]:
        table.add_column(c, justify="left" if c == "predictor" else "right")
    for r in rows:
        if r["layer"] == "mean":
            table.add_row(r["predictor"], str(r["horizon"]), *(f"{r[k]:.4f}" for k in keys))
    return table


def check_options(config: EvalConfig) -> None:
    """Every numeric option in its range, as one ValueError line (before any work)."""
    for name in ("max_sequences", "horizon", "prefetch_horizon", "prefetch_top_k", "num_experts"):
        check_at_least(name, getattr(config, name), 1)
    for k in config.ks or []:
        check_at_least("ks", k, 1)
    for capacity in config.capacities:
        check_between("capacities", capacity, 0, float("inf"), low_open=True)
    check_between("prefetch_threshold", config.prefetch_threshold, 0.0, 1.0)
    check_between("percentile", config.percentile, 0.0, 100.0)
    check_between("overfetch", config.overfetch, 0.0, float("inf"), low_open=True)


def run(config: EvalConfig, use_wandb: bool = True, console: Console | None = None) -> dict:
    """Everything `specmd-eval` does, callable from Python; returns {"metrics": rows, "cache": rows, "output_dir"}."""
    from data_pipelines import HarvestConfig, ensure_harvest, load_harvest
    from eval.hardware import get_profile

    console = console or (Console() if Console().is_terminal else Console(width=160))
    if config.split not in ("validation", "train", "all"):
        raise ValueError(f"split must be validation, train or all, got {config.split!r}")
    check_options(config)
    get_profile(config.hardware)  # fail early on a bad name
    if config.trace:
        from eval.trace_replay import run_on_trace

        return run_on_trace(config, use_wandb, console, versions("torch", "transformers", "datasets"), git_commit())
    path = Path(config.harvest) if config.harvest else ensure_harvest(HarvestConfig(progress=config.progress))
    harvest = load_harvest(path)
    if config.metrics and harvest.manifest.get("hidden_layers") == []:
        raise ValueError(
            f"the harvest {path} kept no router inputs (hidden_layers []): predictor metrics need them; pass "
            "--metrics false for the cache benchmark alone, or harvest again without --hidden-layers '[]'"
        )
    split = harvest.dataset if config.split == "all" else getattr(harvest, config.split)
    if config.max_sequences is not None:
        keep = set(sorted(set(split.unique("sequence_id")))[: config.max_sequences])
        split = split.filter(lambda b: [s in keep for s in b["sequence_id"]], batched=True)
    if config.metrics and config.split == "train":
        console.print("[yellow]note[/yellow] the frequency baseline is counted on the train split being evaluated")
    if len(split) == 0:
        raise ValueError(f"the {config.split} split of {path} is empty")
    model, adapter = _load_model(harvest.manifest)
    final = Path(config.output_dir or f"outputs/eval/{path.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    with fresh_output_dir(final, say=console.print) as out:  # one run per folder, complete or absent
        result, run_info = _evaluate(config, path, harvest, split, model, adapter, out, console)
    result["output_dir"] = str(final)
    if use_wandb and config.wandb:
        from eval.report import log_wandb_run_folder

        log_wandb_run_folder(run_info, result["cache"], final, project=config.wandb_project)
    console.print(f"reports in {final}")
    return result


def _next_pass_and_cost(predictors, split, harvest, adapter, hidden_layers, out: Path, console) -> tuple[list, list]:
    """The next token's first-layer recall (banks' heads vs router reuse and frequency) and each bank's FLOPs share."""
    from eval.predictor_metrics import cost_rows, next_pass_rows, resolve_predictors

    loaded = resolve_predictors(predictors, adapter)
    next_rows = next_pass_rows(loaded, split, adapter, harvest.train, hidden_layers)
    if next_rows:
        table = Table(title=f"Next token's first MoE layer (predicted from MoE layer {adapter.num_layers - 1})")
        for column in next_rows[0]:
            table.add_column(column, justify="left" if column == "predictor" else "right")
        for row in next_rows:
            table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
        console.print(table)
        write_csv(next_rows, out / "next_pass.csv")
    costs = cost_rows(loaded, adapter)
    if costs:
        table = Table(title="Predictor cost: FLOPs per token as a share of the MoE layer's (source layers)")
        shares = [column for column in costs[0] if column.endswith("_share")]  # this model, parts, real shapes
        table.add_column("predictor")
        for column in shares:
            table.add_column(column.replace("_", " "), justify="right")
        for row in costs:
            table.add_row(row["predictor"], *(f"{row[column]:.2%}" for column in shares))
        console.print(table)
        write_csv(costs, out / "predictor_cost.csv")
    return next_rows, costs


def _evaluate(config: EvalConfig, path: Path, harvest, split, model, adapter, out: Path, console) -> tuple[dict, dict]:
    """The predictor metrics and the cache benchmark, written into `out`; returns (result, run.json's content)."""
    from eval.hardware import ModelShape, get_shape
    from eval.trace import Trace

    kept = harvest.manifest.get("hidden_layers")
    hidden_layers = list(range(adapter.num_layers)) if kept is None else kept
    result: dict = {"output_dir": str(out), "metrics": [], "cache": []}
    banks = list(config.banks) or _discover_banks(adapter, say=console.print)
    if banks and not config.banks:
        console.print(f"trained bank(s) for this model: {', '.join(banks)}")
    # a hidden-state bank first; a routing-only bank (which the policy feeds the trace's ids) when it is the only one
    prefetch_bank = config.prefetch_bank or next((b for b in banks if _bank_kind(b) != "routing"), None)
    prefetch_bank = prefetch_bank or next(iter(banks), None)
    prefetches = config.prefetches or ["none", "router-reuse", *(["predictor"] if prefetch_bank else [])]

    if config.metrics:
        from eval.predictor_metrics import baseline_predictors, predictor_metric_rows

        horizon = config.horizon or bank_horizon(banks, adapter.num_layers)
        predictors = baseline_predictors(adapter, harvest.train, horizon=horizon)
        predictors |= {Path(b).name: b for b in banks}
        # the same scoring options for the whole split and, below, for each phase
        scoring = {
            "adapter": adapter,
            "hidden_layers": hidden_layers,
            "ks": tuple(config.ks) if config.ks else None,
            "progress": config.progress,
        }
        rows = predictor_metric_rows(predictors, split, **scoring)
        console.print(_metrics_table(rows))
        write_csv(rows, out / "metrics.csv")
        result["metrics"] = rows
        if "phase" in split.column_names:  # a generation-mode harvest: the same predictors on each phase
            from eval.phase_shift import phase_shift_rows, shift_table

            shift = phase_shift_rows(predictors, split, **scoring)
            console.print(shift_table(shift))
            write_csv(shift, out / "shift.csv")
            result["shift"] = shift
        result["next_pass"], result["cost"] = _next_pass_and_cost(
            predictors, split, harvest, adapter, hidden_layers, out, console
        )

    if config.cache:
        from specmd_predict.predictors import RouterReusePredictor, load_predictors

        with_hidden = any(p != "none" for p in prefetches)
        trace = Trace.from_dataset(split, harvest.manifest, with_hidden=with_hidden)
        dtype_bytes = DTYPE_BYTES.get(harvest.manifest.get("model", {}).get("dtype"), 2)
        shape = (
            get_shape(config.shape)
            if config.shape
            else ModelShape.from_config(model.config, name=path.name, dtype_bytes=dtype_bytes)
        )
        if prefetch_bank:
            bank = load_predictors(prefetch_bank, adapter=adapter)
        else:
            bank = RouterReusePredictor(adapter, horizon=config.prefetch_horizon)
        predictors = {
            "router-reuse": RouterReusePredictor(adapter, horizon=1),
            "score-percentile": bank,
            "predictor": bank,
        }
        bench = run_configured_benchmark(
            config,
            trace,
            out,
            prefetch_kwargs={"overfetch": config.overfetch, "percentile": config.percentile},
            prefetches=prefetches,
            predictor=predictors,
            shape=shape,
            console=console,
            decoder_indices=adapter.decoder_indices,
        )
        result["cache"] = bench["rows"]

    run_info = {
        "config": asdict(config),
        "harvest": str(path),
        "git_commit": git_commit(),
        "versions": versions("torch", "transformers", "datasets"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(run_info, out / "run.json")
    return result, run_info


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    namespace = parser.parse_args(normalize_options(sys.argv[1:] if argv is None else list(argv), EvalConfig))
    config = EvalConfig(**{f.name: namespace[f.name] for f in fields(EvalConfig)})
    quiet_libraries(verbose=namespace["verbose"], progress=config.progress)
    try:
        run(config)
    except ValueError as err:  # HarvestError is a ValueError too
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
