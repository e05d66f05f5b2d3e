"""What a predictor costs: its FLOPs per token at each source layer, as a share of that MoE layer's FLOPs.

    shares = predictor_cost(predictor, adapter)     # {"moe_layer_flops", "per_layer": [{layer, flops, share}], ...}

Predictor FLOPs are counted by torch's own `FlopCounterMode` on one token (matrix products; elementwise work
such as GELU or the softmax is not counted, as is usual). An MoE layer's FLOPs per token are counted from the
model's shapes: 2 x (K routed experts' weights + the router's E x D + any shared experts' weights), i.e. one
multiply-add per weight a token touches. A next-pass head is charged to the last MoE layer it runs at, a
next-use head to every layer.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.predictors.base import ExpertPredictor


def moe_layer_flops(adapter: MoEAdapter, layer: int = 0) -> int:
    """FLOPs per token of one MoE layer: its K routed experts, its router and its shared experts."""
    weights_per_expert = sum(getattr(adapter.experts(layer), n)[0].numel() for n in adapter.expert_tensor_names(layer))
    shared = adapter.shared_experts(layer)
    shared_weights = sum(p.numel() for p in shared.parameters()) if shared is not None else 0
    return 2 * (adapter.top_k * weights_per_expert + adapter.num_experts * adapter.hidden_size + shared_weights)


@torch.no_grad()
def counted_flops(fn, *args) -> int:
    """FLOPs of one call of `fn(*args)`, counted by torch.utils.flop_counter."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args)
    return int(counter.get_total_flops())


def predictor_cost(predictor: ExpertPredictor, adapter: MoEAdapter) -> dict:
    """Per source layer: the predictor's FLOPs per token and their share of the MoE layer's; the mean and max share."""
    moe = moe_layer_flops(adapter)
    reference = next(iter(predictor.parameters()), None)
    token_1D = torch.zeros(
        1,
        predictor.hidden_size,
        dtype=torch.float32 if reference is None else reference.dtype,
        device="cpu" if reference is None else reference.device,
    )
    per_layer = []
    for layer in range(predictor.num_layers):
        if not predictor.horizon_at(layer):
            flops = 0
        elif getattr(predictor, "uses_routing", False):  # ids in, not a hidden state
            ids_1K = torch.arange(predictor.top_k, device=token_1D.device).view(1, -1)
            flops = counted_flops(predictor.logits_routing, layer, ids_1K)
        else:
            flops = counted_flops(predictor.logits, layer, token_1D)
        if predictor.predicts_next_use:  # the evictor's table, refreshed at every layer
            flops += counted_flops(predictor.next_use_log_passes, layer, token_1D)
        if predictor.predicts_next_pass and layer == predictor.num_layers - 1:
            flops += counted_flops(predictor.next_pass_logits, token_1D)
        per_layer.append({"layer": layer, "flops": flops, "share": flops / moe})
    shares = [row["share"] for row in per_layer]
    return {
        "moe_layer_flops": moe,
        "per_layer": per_layer,
        "mean_share": sum(shares) / len(shares),
        "max_share": max(shares),
    }
