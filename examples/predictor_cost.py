"""The default bank's cost on each model shape: FLOPs per token as a share of that model's MoE layer, with the rank
`specmd-train --rank auto` (the default) picks there, split into the predictor and its heads.

    python examples/predictor_cost.py                         # embedded, OLMoE-1B-7B and Mixtral-8x7B shapes
    python examples/predictor_cost.py --shapes olmoe-1b-7b --kind lowrank --horizon 2

Counted by torch's FlopCounterMode on a twin of the bank built on the meta device (no weights, no model download);
the MoE layer is its K experts' gate, up and down projections plus its router (eval/hardware.py shapes).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from eval.hardware import SHAPES
from eval.predictor_metrics import shape_moe_flops
from specmd_predict.predictors.cost import predictor_cost
from train.config import TrainConfig
from train.run import AUTO_RANKS, choose_rank, default_bank


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["embedded", "olmoe-1b-7b", "mixtral-8x7b"], choices=SHAPES)
    parser.add_argument("--kind", default="residual", choices=["residual", "lowrank", "shared", "linear"])
    parser.add_argument("--horizon", type=int, default=3)
    args = parser.parse_args(argv)
    config = TrainConfig(kind=args.kind, horizon=args.horizon)
    print("| shape | rank (auto) | bank | predictor | next-use head | next-pass head |")
    print("|---|---|---|---|---|---|")
    for name in args.shapes:
        shape = SHAPES[name]
        identity = {"model_type": name, "num_layers": shape.num_layers, "num_experts": shape.num_experts,
                    "top_k": shape.top_k, "hidden_size": shape.hidden_size, "router_fingerprint": "shape"}  # fmt: skip
        shaped = replace(config, horizon=min(args.horizon, shape.num_layers - 1))
        costs = {
            rank: predictor_cost(default_bank(shaped, identity, rank), moe_flops=shape_moe_flops(shape))
            for rank in AUTO_RANKS
        }
        rank, _ = choose_rank({rank: cost["mean_share"] for rank, cost in costs.items()})
        cost = costs[rank]
        parts = cost["mean_share_by_part"]
        print(
            f"| {name} | {rank} | {cost['mean_share']:.2%} | {parts['predictor']:.2%} | {parts.get('next_use', 0):.2%}"
            f" | {parts.get('next_pass', 0):.2%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
