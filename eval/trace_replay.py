"""`specmd-eval --trace PATH`: replay a routing trace logged outside this project through the cache benchmark.

    specmd-eval --trace examples/routing_trace.jsonl --capacities '[0.25, 0.5]' --no-wandb
    specmd-eval --trace serving_log.parquet --num-experts 64 --evictions '[lru, least-stale, belady]'
    specmd-eval --trace log.parquet --banks '[outputs/banks/log-routing]'     # + a routing-only bank's prefetch

The trace is read and checked by `data_pipelines.routing_trace.read_routing_trace` (schema in the README)
before anything is written; a malformed one is one `specmd-eval: error: row N: ...` line. Passes are rebuilt
from phase and position (a prefill pass per sequence's prompt, one pass per decode token) and the whole trace
is replayed (there is no training here, so no split). Such a trace has routing only: policies that need
router inputs (router-reuse and score-percentile prefetch, hidden-state banks, router reuse's metrics) are
reported as unavailable with the reason; every history-only eviction policy runs, with Belady beside it.

A routing-only bank (`specmd-train --kind routing`, from a harvest or `--trace`) needs no router inputs: given
with --banks or --prefetch-bank, its shapes (MoE layers, experts, top-k) must be the trace's (else one line),
it is the learned prefetcher of the "predictor" rows (prefetches default to none and predictor), and its
recall@k is reported next to the frequency baseline (counted on the replayed trace itself, so it sees the
future: a generous baseline) in metrics.csv.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

HIDDEN_STATE_PREFETCHES = ("router-reuse", "predictor", "score-percentile")
NO_HIDDEN_REASON = "needs router inputs (hidden states) and the model's routers; an external trace has routing only"


def unavailable_prefetches(prefetches: list[str]) -> dict[str, str]:
    """{"prefetch NAME": why it cannot run on an external trace} for the asked policies that need hidden states."""
    return {f"prefetch {name}": NO_HIDDEN_REASON for name in prefetches if name in HIDDEN_STATE_PREFETCHES}


def run_on_trace(config, use_wandb: bool, console: Console, versions: dict, git_commit: str | None) -> dict:
    """The `--trace` branch of `eval.cli.run`: returns {"metrics": [], "cache": rows, "output_dir", "unavailable"}."""
    from data_pipelines.routing_trace import read_routing_trace
    from eval.cache_benchmark import run_configured_benchmark
    from eval.hardware import get_shape
    from eval.report import write_json
    from eval.trace import Trace
    from specmd_predict.io import fresh_output_dir

    if config.harvest:
        raise ValueError("give either --harvest or --trace, not both")
    routing = read_routing_trace(config.trace, num_experts=config.num_experts)
    max_sequences = config.max_sequences
    trace = Trace.from_harvest(routing, split=None, max_sequences=max_sequences, with_hidden=False)
    unavailable: dict[str, str] = {}
    routing_banks = _routing_banks(config, routing, unavailable)
    prefetch_bank = routing_banks.get(config.prefetch_bank) or next(iter(routing_banks.values()), None)
    prefetches = list(config.prefetches) if config.prefetches else ["none", *(["predictor"] if prefetch_bank else [])]
    hidden_only = [p for p in HIDDEN_STATE_PREFETCHES if not (p == "predictor" and prefetch_bank is not None)]
    unavailable |= unavailable_prefetches([p for p in prefetches if p in hidden_only])
    if config.metrics and not routing_banks:
        unavailable["predictor metrics"] = "router reuse and hidden-state banks read router inputs (hidden states)"
    elif config.metrics:
        unavailable["router-reuse metrics"] = NO_HIDDEN_REASON
    runnable = [p for p in prefetches if p not in hidden_only]
    if not runnable:
        raise ValueError(
            f"no prefetch policy can run on an external trace ({', '.join(prefetches)} "
            f"{NO_HIDDEN_REASON}); use --prefetches '[none]'"
        )

    name = Path(config.trace).name.split(".")[0] or "trace"
    out = Path(config.output_dir or f"outputs/eval/{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    m = routing.manifest
    console.print(
        f"trace {config.trace}: {m['num_tokens']:,} tokens of {m['num_sequences']:,} sequences "
        f"({m['num_prefill_tokens']:,} prefill, {m['num_decode_tokens']:,} decode), "
        f"{m['model']['num_layers']} MoE layers x top-{m['model']['top_k']} of "
        f"{m['model']['num_experts']} experts; {trace.num_passes:,} passes"
    )
    for what, reason in unavailable.items():
        console.print(f"[yellow]unavailable[/yellow] {what}: {reason}")
    with fresh_output_dir(out, say=console.print) as tmp:  # one complete run per folder, or none
        metrics = _routing_metrics(config, routing, routing_banks, tmp, console) if config.metrics else []
        bench = run_configured_benchmark(
            config,
            trace,
            tmp,
            prefetches=runnable,
            predictor={"predictor": prefetch_bank} if prefetch_bank is not None else None,
            shape=get_shape(config.shape) if config.shape else None,
            console=console,
        )
        run_info = {
            "config": asdict(config),
            "trace": str(config.trace),
            "trace_manifest": m,
            "unavailable": unavailable,
            "prefetch_bank": None if prefetch_bank is None else str(prefetch_bank.bank_path),
            "git_commit": git_commit,
            "versions": versions,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(run_info, tmp / "run.json")
    if use_wandb and config.wandb:
        from eval.report import log_wandb_run_folder

        log_wandb_run_folder(run_info, bench["rows"], out, project=config.wandb_project)
    console.print(f"reports in {out}")
    return {"output_dir": str(out), "metrics": metrics, "cache": bench["rows"], "unavailable": unavailable}


def _routing_banks(config, routing, unavailable: dict[str, str]) -> dict:
    """{bank path: loaded routing-only bank} of --banks and --prefetch-bank, each checked against the trace's
    shapes (one line if they differ); hidden-state banks go to `unavailable` with the reason."""
    from data_pipelines.routing_trace import check_trace_shapes
    from specmd_predict.predictors import load_predictors, read_bank_config

    paths = list(dict.fromkeys([*config.banks, *([config.prefetch_bank] if config.prefetch_bank else [])]))
    banks = {}
    for path in paths:
        kind = read_bank_config(path)["kind"]
        if kind != "routing":
            if path == config.prefetch_bank:
                raise ValueError(f"--prefetch-bank {path} is a {kind} bank: {NO_HIDDEN_REASON}")
            unavailable[f"bank {path}"] = f"a {kind} bank: {NO_HIDDEN_REASON}"
            continue
        bank = load_predictors(path)
        check_trace_shapes(bank.identity, routing, what=f"routing bank {path}")
        banks[path] = bank
    return banks


def _routing_metrics(config, routing, banks: dict, out: Path, console) -> list[dict]:
    """Recall@k (and the other predictor metrics) of each routing bank and the frequency baseline on the trace."""
    if not banks:
        return []
    from eval.cli import _metrics_table
    from eval.predictor_metrics import predictor_metric_rows
    from eval.report import write_csv
    from specmd_predict.predictors import FrequencyPredictor

    first = next(iter(banks.values()))
    horizon = config.horizon or max(bank.horizon for bank in banks.values())
    predictors = {Path(path).name: bank for path, bank in banks.items()}
    # counted on the replayed trace itself (no split here): a baseline that has seen the future
    predictors["frequency (this trace)"] = FrequencyPredictor.from_dataset(routing.dataset, first.identity, horizon)
    rows = predictor_metric_rows(
        predictors, routing.dataset, ks=tuple(config.ks) if config.ks else None, progress=config.progress
    )
    console.print(_metrics_table(rows))
    write_csv(rows, out / "metrics.csv")
    return rows
