"""Churn under router-reuse prefetch on a model with random weights: hit rate and bytes copied per eviction policy.

    python examples/router_reuse_churn.py
    python examples/router_reuse_churn.py --evictions fld least-stale-predicted --capacities 0.25 --new-tokens 64
    python examples/router_reuse_churn.py --evictions least-stale-predicted --proposal-weight 1.0

A tiny OLMoE with random weights (16 MoE layers, 64 experts, top-8: OLMoE-1B-7B's routing shape) decodes greedily
from a random prompt while its routing and router inputs are recorded; the recording is replayed through the cache
simulator (the runtime's driver: copies landing at once, as the runtime on a CPU) with router-reuse prefetch one
layer ahead and the runtime's default budget (top-k copies per layer). Random weights route almost the same experts
every token and router reuse guesses them poorly, the setting where least-stale-predicted used to evict the working
set for prefetches never used and copy them back every pass (docs/results/least_stale.md). Counters are the decode
passes' (the prefill pass's counters are replayed alone and subtracted), as benchmarks/runtime.py reports them.
"""

from __future__ import annotations

import argparse
import sys

import torch
from transformers import OlmoeConfig, OlmoeForCausalLM

from eval.simulate import simulate
from eval.trace import Trace
from runtime.policies import EVICTION_POLICIES
from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing
from specmd_predict.predictors.router_reuse import RouterReusePredictor

COUNTERS = ("hits", "misses", "bytes_moved", "prefetches_issued", "prefetches_wasted")


def random_olmoe(seed: int) -> OlmoeForCausalLM:
    torch.manual_seed(seed)
    config = OlmoeConfig(
        vocab_size=300, hidden_size=128, intermediate_size=64, num_hidden_layers=16, num_attention_heads=4,
        num_key_value_heads=4, num_experts=64, num_experts_per_tok=8, eos_token_id=None, pad_token_id=1,
    )  # fmt: skip
    return OlmoeForCausalLM(config).eval()


def recorded_trace(model, prompt_tokens: int, new_tokens: int, seed: int) -> Trace:
    """Greedy decoding's passes (one prefill, then one token each) as a replayable trace with router inputs."""
    adapter = get_adapter(model)
    prompt = torch.randint(
        2, model.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(seed)
    )
    with record_routing(adapter, keep_inputs=True) as record, torch.no_grad():
        model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, pad_token_id=1)
    return Trace.from_recording(record, adapter.num_experts)


def first_pass(trace: Trace) -> Trace:
    end = trace.pass_bounds[0][1]
    return Trace(
        expert_ids_NLK=trace.expert_ids_NLK[:end], pass_bounds=trace.pass_bounds[:1], pass_is_prefill=[True],
        num_experts=trace.num_experts, hidden_NLD=trace.hidden_NLD[:end], hidden_layers=trace.hidden_layers,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evictions", nargs="+", default=["fld", "least-stale-reverse", "least-stale-predicted"])
    parser.add_argument("--capacities", type=float, nargs="+", default=[0.05, 0.1, 0.25])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64, help="generated tokens: 1 prefill + the rest decode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--proposal-weight", type=float, default=None,
        help="least-stale-predicted's weight of a prefetcher's choice in the frequency (default: the policy's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    unknown = [e for e in args.evictions if e not in EVICTION_POLICIES or e == "belady"]
    weight_ok = args.proposal_weight is None or 0.0 <= args.proposal_weight <= 1.0
    sizes_ok = args.new_tokens >= 2 and args.prompt_tokens >= 1
    if unknown or not weight_ok or not sizes_ok or not all(0 < c <= 1 for c in args.capacities):
        print(
            f"router_reuse_churn: error: need runtime eviction policies (got {unknown or args.evictions}), "
            "capacities in (0, 1], --proposal-weight in [0, 1], --new-tokens >= 2 and --prompt-tokens >= 1",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    model = random_olmoe(args.seed)
    adapter = get_adapter(model)
    trace = recorded_trace(model, args.prompt_tokens, args.new_tokens, args.seed)
    prefill = first_pass(trace)
    reuse = RouterReusePredictor(adapter, horizon=1)
    expert_bytes, decode_tokens = adapter.expert_bytes(), args.new_tokens - 1
    print(
        f"random OLMoE (16 x 64 experts, top-8), {decode_tokens} decode passes, router-reuse prefetch, copies at once"
    )
    print("| eviction | " + " | ".join(f"{c:.0%}: hit rate, MB copied/token" for c in args.capacities) + " |")
    print("|---|" + "---|" * len(args.capacities))
    proposals: dict = {}
    proposals_prefill: dict = {}
    for eviction in args.evictions:
        cells = []
        for capacity in args.capacities:
            common = {"expert_bytes": expert_bytes, "predictor": reuse, "prefetch_budget": adapter.top_k}
            if args.proposal_weight is not None and eviction.startswith("least-stale-predicted"):
                common["eviction_kwargs"] = {"proposal_weight": args.proposal_weight}
            full = simulate(trace, eviction, "router-reuse", capacity, proposals=proposals, **common).stats
            head = simulate(prefill, eviction, "router-reuse", capacity, proposals=proposals_prefill, **common).stats
            decode = {name: getattr(full, name) - getattr(head, name) for name in COUNTERS}
            hit_rate = decode["hits"] / max(decode["hits"] + decode["misses"], 1)
            cells.append(f"{hit_rate:.4f}, {decode['bytes_moved'] / decode_tokens / 1e6:.2f}")
        print(f"| {eviction} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
