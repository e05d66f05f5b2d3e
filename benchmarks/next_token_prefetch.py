"""Hit rates with the next token's first MoE layer prefetched from the token (pass start) vs from the state alone.

    python benchmarks/next_token_prefetch.py --bank outputs/banks/embedded-residual
    python benchmarks/next_token_prefetch.py --bank <bank> --harvest outputs/harvests/<generate-mode harvest>

A bank whose next-pass head holds a token table (`specmd-train` makes one where the harvest has token ids)
prefetches MoE layer 0 of pass p + 1 when that pass starts, from its input token and pass p's last MoE layer
(runtime/pass_start.py); with `next_token=False` the same bank proposes it at pass p's last MoE layer from the state
alone (the path before issue 11.4). Both rows use the same bank, evictor, horizon, top-k and per-layer budget.

Runtime (CPU): the embedded model, offloaded at each capacity, decodes `--new_tokens` greedy tokens after each of
`--prompts` prompts of the embedded corpus's validation files (one offloaded model per row, kept across prompts);
the counters are those of the decode steps (after each prefill). Simulator (`--harvest`): the harvest's validation
passes (prefill and decode) replayed by eval/simulate.py with the same settings (copies land at once).
Prints one table (layer-0 hit rate, overall hit rate, prefetches issued and used) and writes it atomically as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from runtime.offload import DEFAULT_EVICTION  # noqa: E402
from specmd_predict.embedded_corpus import corpus_prompts  # noqa: E402
from specmd_predict.io import atomic_write_text  # noqa: E402

MODES = {"state only": False, "with next token": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", required=True, help="predictor bank directory (next-pass head with a token table)")
    parser.add_argument("--capacities", default="0.1,0.25", help="fractions of all expert bytes, comma-separated")
    parser.add_argument("--eviction", default=DEFAULT_EVICTION, help="eviction policy of every row")
    parser.add_argument("--prompts", type=int, default=8, help="runtime: corpus prompts, decoded one after another")
    parser.add_argument("--prompt_tokens", type=int, default=64, help="runtime: tokens per prompt")
    parser.add_argument("--new_tokens", type=int, default=64, help="runtime: greedy tokens per prompt")
    parser.add_argument("--harvest", default=None, help="also replay this harvest's validation split (simulator rows)")
    parser.add_argument("--output", default="outputs/benchmarks/next_token_prefetch.json", help="JSON results")
    args = parser.parse_args(argv)
    try:
        args.capacities = [float(c) for c in args.capacities.split(",")]
    except ValueError:
        parser.error(f"--capacities must be comma-separated fractions, got {args.capacities!r}")
    if not all(0.0 < c <= 1.0 for c in args.capacities):
        parser.error(f"--capacities must be fractions in (0, 1], got {args.capacities}")
    for name in ("prompts", "prompt_tokens", "new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def load_bank(path: str, adapter):
    from specmd_predict.predictors import load_predictors

    bank = load_predictors(path)
    bank.check_model(adapter)
    if not bank.next_pass_uses_token:
        raise ValueError(f"the bank {path} has no next-pass token table: nothing to compare")
    return bank


def layer_counts(stats) -> list[tuple[int, int]]:
    return [(layer.hits, layer.misses) for layer in stats.layers]


def rates(hits_misses: list[tuple[int, int]], issued: int, used: int) -> dict:
    hits0, misses0 = hits_misses[0]
    hits, misses = sum(h for h, _ in hits_misses), sum(m for _, m in hits_misses)
    return {
        "layer0_hit_rate": hits0 / max(hits0 + misses0, 1),
        "hit_rate": hits / max(hits + misses, 1),
        "requests": hits + misses,
        "prefetches_issued": issued,
        "prefetches_used": used,
    }


@torch.inference_mode()
def runtime_rows(args: argparse.Namespace) -> list[dict]:
    from transformers import DynamicCache

    import runtime
    from runtime.policies.prefetch_predictor import PredictorPrefetch
    from specmd_predict.adapters import get_adapter
    from specmd_predict.embedded import load_embedded_model

    torch.set_num_threads(1)
    plain, tokenizer = load_embedded_model()
    adapter = get_adapter(plain)
    bank = load_bank(args.bank, adapter)
    prompts = corpus_prompts(tokenizer, args.prompt_tokens, args.prompts)
    rows = []
    for capacity in args.capacities:
        for mode, next_token in MODES.items():
            prefetch = PredictorPrefetch(bank, horizon=bank.horizon, top_k=adapter.top_k, next_token=next_token)
            prefetch.keep_probabilities = False  # as offload() sets it for an evictor that ignores predictions
            model = runtime.offload(
                copy.deepcopy(plain), predictors=bank, capacity=capacity, eviction=args.eviction, prefetch=prefetch
            )
            counts = [(0, 0)] * adapter.num_layers
            issued = used = 0
            for prompt_ids in prompts:
                cache = DynamicCache(config=model.config)
                token = model(input_ids=prompt_ids, cache=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
                before = runtime.offload_stats(model)  # the decode steps' counters: after minus before
                for _ in range(args.new_tokens):
                    token = model(input_ids=token, cache=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
                after = runtime.offload_stats(model)
                delta = [
                    (a[0] - b[0], a[1] - b[1]) for a, b in zip(layer_counts(after), layer_counts(before), strict=True)
                ]
                counts = [(c[0] + d[0], c[1] + d[1]) for c, d in zip(counts, delta, strict=True)]
                issued += after.prefetches_issued - before.prefetches_issued
                used += after.prefetches_used - before.prefetches_used
            rows.append({"source": "runtime", "capacity": capacity, "mode": mode, **rates(counts, issued, used)})
    return rows


def simulator_rows(args: argparse.Namespace) -> list[dict]:
    from data_pipelines import load_harvest
    from eval.simulate import simulate
    from eval.trace import Trace
    from specmd_predict.adapters import get_adapter
    from specmd_predict.embedded import load_embedded_model

    adapter = get_adapter(load_embedded_model()[0])
    bank = load_bank(args.bank, adapter)
    trace = Trace.from_harvest(load_harvest(args.harvest), split="validation")
    if trace.token_ids_N is None:
        raise ValueError(f"the harvest {args.harvest} has no token ids: the simulator cannot pass the next token")
    rows = []
    for capacity in args.capacities:
        for mode, next_token in MODES.items():
            result = simulate(
                trace, args.eviction, "predictor", capacity, expert_bytes=adapter.expert_bytes(), predictor=bank,
                prefetch_kwargs={"horizon": bank.horizon, "next_token": next_token}, prefetch_budget=adapter.top_k,
            )  # fmt: skip
            s = result.stats
            counts = list(zip(s.layer_hits, s.layer_misses, strict=True))
            rows.append(
                {"source": "simulator", "capacity": capacity, "mode": mode}
                | rates(counts, s.prefetches_issued, s.prefetches_used)
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows = runtime_rows(args)
        if args.harvest:
            rows += simulator_rows(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("| source | capacity | layer-0 prefetch | layer-0 hit rate | hit rate | prefetches issued / used |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['source']} | {row['capacity']:.0%} | {row['mode']} | {row['layer0_hit_rate']:.3f} | "
            f"{row['hit_rate']:.3f} | {row['prefetches_issued']} / {row['prefetches_used']} |"
        )
    config = {k: v for k, v in vars(args).items() if k != "output"}
    atomic_write_text(Path(args.output), json.dumps({"config": config, "rows": rows}, indent=2))
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
