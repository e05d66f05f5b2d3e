"""How much of the gap to Belady the learned next use closes: least-stale-predicted with the bank's next-use table
against the same evictor with its hand-made heuristic, least-stale-reverse, LRU and Belady, with predictor prefetch.

    python examples/next_use_gap.py --harvest outputs/harvests/<name> --bank outputs/banks/embedded-residual
    python examples/next_use_gap.py ... --capacities 0.05 0.1 0.25 --max-sequences 20 --phase decode
    python examples/next_use_gap.py ... --shape embedded --oracle   # copy times as specmd-eval's; + true tables

The bank must have a next-use head (specmd-train's default). "heuristic" is `least-stale-predicted-heuristic`, the
same evictor ignoring the bank's next-use tables, so both runs prefetch identically and differ only in the victim
order. Gap closed = (learned - heuristic) / (Belady - heuristic) hit rate, per capacity.
Without `--shape` every copy lands at once (the runtime's CPU counters); with it, copies take the `--hardware`
profile's time for that model shape (specmd-eval's timing; late prefetches count as misses). `--oracle` adds
least-stale-predicted fed the trace's true next-use tables (`true_next_use_tables`): the evictor's side of the
learned order, which reaches Belady when the tables are exact.
"""

from __future__ import annotations

import argparse
import sys

import torch

from data_pipelines import load_harvest
from eval.hardware import get_profile, get_shape
from eval.simulate import simulate
from eval.trace import Trace
from specmd_predict.predictors import load_predictors
from specmd_predict.predictors.next_use import true_next_use_tables


def oracle_proposals(trace: Trace, proposals: dict) -> dict:
    """The same prefetch answers with each (pass, layer)'s next-use table replaced by the true one."""
    used_PLE = torch.zeros(trace.num_passes, trace.num_layers, trace.num_experts, dtype=torch.bool)
    for p, layers in enumerate(trace.requests()):
        for keys in layers:
            for key in keys:
                used_PLE[p, key[0], key[1]] = True
    tables_PLLE = true_next_use_tables(used_PLE)
    return {  # (p, -1): the pass-start proposal for layer 0, which carries no table
        (p, layer): (proposal[0], proposal[1], tables_PLLE[p, layer]) if layer >= 0 else proposal
        for (p, layer), proposal in proposals.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--harvest", required=True, help="a finished harvest folder")
    parser.add_argument("--bank", required=True, help="a bank with a next-use head")
    parser.add_argument("--capacities", type=float, nargs="+", default=[0.05, 0.1, 0.25])
    parser.add_argument("--max-sequences", type=int, default=20, help="validation sequences replayed")
    parser.add_argument(
        "--phase",
        choices=["all", "prefill", "decode"],
        default="all",
        help="keep only these rows (a generate-mode harvest has both)",
    )
    parser.add_argument("--shape", default=None, help="time copies for this model shape (e.g. embedded)")
    parser.add_argument("--hardware", default="pcie4-x16", help="copy-time profile used with --shape")
    parser.add_argument("--oracle", action="store_true", help="add a row fed the trace's true next-use tables")
    args = parser.parse_args(argv)
    try:
        timing = {"hardware": get_profile(args.hardware), "shape": get_shape(args.shape)} if args.shape else {}
    except ValueError as err:
        print(f"next_use_gap: error: {err}", file=sys.stderr)
        return 2

    harvest = load_harvest(args.harvest)
    split = harvest.validation
    if args.phase != "all":
        if "phase" not in split.column_names:
            print(
                f"next_use_gap: error: {args.harvest} has no phase column (harvest with --mode generate)",
                file=sys.stderr,
            )
            return 2
        split = split.filter(lambda b: [p == args.phase for p in b["phase"]], batched=True)
    trace = Trace.from_dataset(split, harvest.manifest, max_sequences=args.max_sequences)
    learned = load_predictors(args.bank)
    if not learned.predicts_next_use:
        print(f"next_use_gap: error: the bank at {args.bank} has no next-use head", file=sys.stderr)
        return 2
    runs = {
        "lru": "lru",
        "least-stale-reverse": "least-stale-reverse",
        "least-stale-predicted (heuristic)": "least-stale-predicted-heuristic",
        "least-stale-predicted (learned next use)": "least-stale-predicted",
        "belady": "belady",
    }
    print(
        f"{trace.num_passes} passes, prefetch: predictor (top-k, 1 layer ahead), "
        + (f"copies timed ({args.hardware}, {args.shape})" if timing else "copies land at once")
    )
    header = "| evictor | " + " | ".join(f"{c:.0%}" for c in args.capacities) + " |"
    print(header + "\n|---|" + "---|" * len(args.capacities))
    hit = {}
    proposals: dict = {}  # prefetch answers depend on the trace only: computed once
    for name, eviction in runs.items():
        rates = []
        for capacity in args.capacities:
            result = simulate(trace, eviction, "predictor", capacity, predictor=learned, proposals=proposals, **timing)
            rates.append(result.stats.hit_rate)
        hit[name] = rates
        print(f"| {name} | " + " | ".join(f"{r:.4f}" for r in rates) + " |")
    if args.oracle:
        exact = oracle_proposals(trace, proposals)
        rates = [
            simulate(
                trace, "least-stale-predicted", "predictor", c, predictor=learned, proposals=exact, **timing
            ).stats.hit_rate
            for c in args.capacities
        ]
        print("| least-stale-predicted (true next-use tables) | " + " | ".join(f"{r:.4f}" for r in rates) + " |")
    gaps = []
    for i, _ in enumerate(args.capacities):
        base, ours, best = (
            hit[n][i]
            for n in ("least-stale-predicted (heuristic)", "least-stale-predicted (learned next use)", "belady")
        )
        gaps.append((ours - base) / (best - base) if best > base else float("nan"))
    print("| share of the heuristic's gap to Belady closed | " + " | ".join(f"{g:+.1%}" for g in gaps) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
