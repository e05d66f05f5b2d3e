"""How much of the gap to Belady the learned next use closes: least-stale-predicted with the bank's next-use table
against the same evictor with its hand-made heuristic, least-stale-reverse, LRU and Belady, with predictor prefetch.

    python examples/next_use_gap.py --harvest outputs/harvests/<name> --bank outputs/banks/embedded-residual
    python examples/next_use_gap.py ... --capacities 0.05 0.1 0.25 --max-sequences 20 --phase decode

The bank must have a next-use head (specmd-train's default). "heuristic" is `least-stale-predicted-heuristic`, the
same evictor ignoring the bank's next-use tables, so both runs prefetch identically and differ only in the victim
order. Gap closed = (learned - heuristic) / (Belady - heuristic) hit rate, per capacity.
"""

from __future__ import annotations

import argparse
import sys

from data_pipelines import load_harvest
from eval.simulate import simulate
from eval.trace import Trace
from specmd_predict.predictors import load_predictors


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
    args = parser.parse_args(argv)

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
        f"{trace.num_passes if hasattr(trace, 'num_passes') else len(trace.pass_bounds)} passes, "
        f"prefetch: predictor (top-k, 1 layer ahead)"
    )
    header = "| evictor | " + " | ".join(f"{c:.0%}" for c in args.capacities) + " |"
    print(header + "\n|---|" + "---|" * len(args.capacities))
    hit = {}
    proposals: dict = {}  # prefetch answers depend on the trace only: computed once
    for name, eviction in runs.items():
        rates = []
        for capacity in args.capacities:
            result = simulate(trace, eviction, "predictor", capacity, predictor=learned, proposals=proposals)
            rates.append(result.stats.hit_rate)
        hit[name] = rates
        print(f"| {name} | " + " | ".join(f"{r:.4f}" for r in rates) + " |")
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
