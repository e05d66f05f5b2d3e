"""`specmd-eval --trace PATH`: replay a routing trace logged outside this project through the cache benchmark.

    specmd-eval --trace examples/routing_trace.jsonl --capacities '[0.25, 0.5]' --no-wandb
    specmd-eval --trace serving_log.parquet --num-experts 64 --evictions '[lru, least-stale, belady]'

The trace is read and checked by `data_pipelines.routing_trace.read_routing_trace` (schema in the README)
before anything is written; a malformed one is one `specmd-eval: error: row N: ...` line. Passes are rebuilt
from phase and position (a prefill pass per sequence's prompt, one pass per decode token) and the whole trace
is replayed (there is no training here, so no split). Such a trace has routing only: policies that need
router inputs (router-reuse, predictor and score-percentile prefetch, the predictor metrics) are reported
as unavailable with the reason; every history-only eviction policy runs, with Belady beside it.
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
    from eval.cache_benchmark import run_cache_benchmark
    from eval.hardware import get_shape
    from eval.report import write_json
    from eval.trace import Trace
    from specmd_predict.io import fresh_output_dir

    if config.harvest:
        raise ValueError("give either --harvest or --trace, not both")
    routing = read_routing_trace(config.trace, num_experts=config.num_experts)
    max_sequences = config.max_sequences
    trace = Trace.from_harvest(routing, split=None, max_sequences=max_sequences, with_hidden=False)
    prefetches = list(config.prefetches) if config.prefetches else ["none"]
    unavailable = unavailable_prefetches(prefetches)
    if config.banks or config.prefetch_bank:
        unavailable["banks"] = "predictor banks read router inputs (hidden states); an external trace has none"
    if config.metrics:
        unavailable["predictor metrics"] = "router reuse and banks read router inputs (hidden states)"
    runnable = [p for p in prefetches if p not in HIDDEN_STATE_PREFETCHES]
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
        bench = run_cache_benchmark(
            trace,
            tmp,
            evictions=config.evictions,
            prefetches=runnable,
            capacities=config.capacities,
            layouts=config.layouts,
            hardware=config.hardware,
            shape=get_shape(config.shape) if config.shape else None,
            wandb=False,
            console=console,
            progress=config.progress,
        )
        run_info = {
            "config": asdict(config),
            "trace": str(config.trace),
            "trace_manifest": m,
            "unavailable": unavailable,
            "git_commit": git_commit,
            "versions": versions,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(run_info, tmp / "run.json")
    if use_wandb and config.wandb:
        from eval.report import log_wandb_run_folder

        log_wandb_run_folder(run_info, bench["rows"], out, project=config.wandb_project)
    console.print(f"reports in {out}")
    return {"output_dir": str(out), "metrics": [], "cache": bench["rows"], "unavailable": unavailable}
