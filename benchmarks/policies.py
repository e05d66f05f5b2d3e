"""Benchmark: microseconds per eviction-policy `victim()` call, per policy, at 64, 256, 1,024 and 4,096 slots.

    python benchmarks/policies.py                                   # Qwen3-30B-A3B-shaped trace (48 x 128, top-8)
    python benchmarks/policies.py --slots 64 256 --sequences 1 --decode-tokens 8 --layers 4 --experts 32 --top-k 2

The access pattern is a seeded synthetic trace with per-sequence locality (`eval.trace.Trace.synthetic`: each
sequence prefers a Zipf-ranked permutation of each layer's experts), replayed pass by pass through the real
`ExpertCache` as the simulator does: a prompt pass, then one pass per decoded token, layers 0 -> L-1, with
each layer's routed experts forwarded to policies that use the current routing, and the requested experts
pinned while their layer runs. Every `victim()` call the replay makes is timed in thread CPU time
(`time.thread_time_ns`, so other processes on a shared machine do not inflate it), less the clock's own cost
measured beforehand, with the garbage collector off during a replay (as `timeit` does); the table shows the
mean (best of --repeat runs), the median and the number of calls.
This is the per-request path (the runtime with copies in flight, and policies not `batched`); the batched
`victims(n)` of the simulator's driver is inside benchmarks/simulator.py's `simulate()` rates.
Target (issue 9): at most 20 us per call at 4,096 slots for every policy. The extra row
`least-stale-predicted+next-use` is the learned path: a (seeded random) next-use table forwarded at every layer.
Writes outputs/benchmarks/policies.json (atomically).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

# Run as a script, this folder leads sys.path, and benchmarks/runtime.py would shadow the runtime package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from eval.trace import Trace  # noqa: E402
from runtime.expert_cache import ExpertCache  # noqa: E402
from runtime.policies import EVICTION_POLICIES, make_eviction  # noqa: E402
from specmd_predict.io import atomic_write_text  # noqa: E402


def clock_overhead_ns(samples: int = 20000) -> int:
    """Median cost of the two clock reads that bracket a timed call (subtracted from every duration)."""
    clock = time.thread_time_ns
    costs = []
    for _ in range(samples):
        start = clock()
        costs.append(clock() - start)
    return int(statistics.median(costs))


NEXT_USE = "least-stale-predicted+next-use"  # the learned path: a next-use table forwarded at every layer


def time_victims(trace: Trace, policy_name: str, num_slots: int, overhead_ns: int = 0) -> list[int]:
    """Thread-CPU nanoseconds of every victim() call of one replay of `trace` through a fresh cache."""
    tables = policy_name == NEXT_USE
    if tables:  # seeded random tables: the cost does not depend on what the predictor says
        policy_name = "least-stale-predicted"
        generator = torch.Generator().manual_seed(0)
    policy = make_eviction(policy_name, num_layers=trace.num_layers, future=trace.flat_requests())
    inner = policy.victim
    durations: list[int] = []
    clock = time.thread_time_ns

    def timed(candidates):
        start = clock()
        key = inner(candidates)
        durations.append(max(0, clock() - start - overhead_ns))
        return key

    policy.victim = timed  # instance attribute: the cache calls it like the method
    cache = ExpertCache(num_slots, policy, num_layers=trace.num_layers)
    wants_routing = bool(getattr(policy, "uses_current_routing", False))
    for layers in trace.requests():
        cache.start_pass()
        for layer, keys in enumerate(layers):
            cache.start_layer(layer)
            if tables:
                cache.next_use(layer, torch.rand(trace.num_layers, trace.num_experts, generator=generator) * 100)
            if wants_routing:
                cache.predictions(dict.fromkeys(keys, 1.0))
            pinned = 0
            for key in keys:
                if pinned >= num_slots:  # a group that fills every slot is computed; the next reuses them
                    cache.unpin_all()
                    pinned = 0
                cache.request(key)
                cache.pin(key)
                pinned += 1
            cache.unpin_all()
    return durations


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[64, 256, 1024, 4096], help="cache sizes")
    parser.add_argument("--layers", type=int, default=48, help="MoE layers of the synthetic trace")
    parser.add_argument("--experts", type=int, default=128, help="experts per layer")
    parser.add_argument("--top-k", type=int, default=8, help="experts per token")
    parser.add_argument("--sequences", type=int, default=2, help="sequences (one prompt pass + decode passes each)")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="tokens of each prompt pass")
    parser.add_argument("--decode-tokens", type=int, default=64, help="decode passes per sequence")
    parser.add_argument("--repeat", type=int, default=2, help="replays per cell; the fastest mean is reported")
    parser.add_argument(
        "--policies",
        nargs="*",
        default=[*EVICTION_POLICIES, NEXT_USE],
        help=f"eviction policies ({NEXT_USE}: fed a next-use table at every layer)",
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmarks/policies.json"))
    args = parser.parse_args(argv)
    total = args.layers * args.experts
    bad = [s for s in args.slots if not args.top_k <= s < total]
    if bad:
        parser.error(f"--slots must lie in [top-k, layers x experts) = [{args.top_k}, {total}), got {bad}")

    trace = Trace.synthetic(
        num_sequences=args.sequences,
        prompt_tokens=args.prompt_tokens,
        decode_tokens=args.decode_tokens,
        num_layers=args.layers,
        num_experts=args.experts,
        top_k=args.top_k,
    )
    trace.requests()
    overhead = clock_overhead_ns()
    rows = []
    for name in args.policies:
        for slots in args.slots:
            runs = []
            for _ in range(args.repeat):
                gc.collect()
                gc.disable()  # as timeit does: a collection of other objects would land in whichever call runs then
                try:
                    runs.append(time_victims(trace, name, slots, overhead))
                finally:
                    gc.enable()
            best = min(runs, key=lambda d: sum(d) / max(len(d), 1))
            calls = len(best)
            rows.append(
                {
                    "policy": name,
                    "slots": slots,
                    "calls": calls,
                    "mean_us": sum(best) / calls / 1e3 if calls else 0.0,
                    "median_us": statistics.median(best) / 1e3 if calls else 0.0,
                    "max_us": max(best) / 1e3 if calls else 0.0,
                }
            )

    source = (
        f"synthetic L{args.layers} E{args.experts} k{args.top_k}, {args.sequences} x ({args.prompt_tokens} "
        f"prompt + {args.decode_tokens} decode) passes"
    )
    table = Table(title=f"victim() cost, mean us per call (median, calls); {source}")
    table.add_column("policy")
    for slots in args.slots:
        table.add_column(f"{slots} slots", justify="right")
    for name in args.policies:
        cells = []
        for slots in args.slots:
            row = next(r for r in rows if r["policy"] == name and r["slots"] == slots)
            cells.append(f"{row['mean_us']:.1f} ({row['median_us']:.1f}, {row['calls']})")
        table.add_row(name, *cells)
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)

    result = {"source": source, "clock_overhead_ns": overhead, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
