"""What a predictor costs: its FLOPs per token at each source layer, as a share of that MoE layer's FLOPs.

    shares = predictor_cost(predictor, adapter)     # {"moe_layer_flops", "per_layer": [{layer, flops, share}], ...}
    shares = predictor_cost(predictor, moe_flops=2 * (K * 3 * D * I + E * D))     # without a model at hand
    twin = predictor_on_shape(bank, num_layers=16, num_experts=64, top_k=8, hidden_size=2048)  # OLMoE's shapes

Predictor FLOPs are counted by torch's own `FlopCounterMode` on one token (matrix products; elementwise work
such as GELU or the softmax is not counted, as is usual). An MoE layer's FLOPs per token are counted from the
model's shapes: 2 x (K routed experts' weights + the router's E x D + any shared experts' weights), i.e. one
multiply-add per weight a token touches. A next-pass head is charged to the last MoE layer it runs at, a
next-use head to every layer; `parts` splits each layer's FLOPs into the predictor and each head.
`predictor_on_shape` rebuilds a predictor (same kind, hyper-parameters and heads) for another model's shapes on
the meta device (no memory), so its cost on OLMoE or Mixtral can be counted without the model (eval/hardware.py
holds those shapes).
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


def predictor_cost(predictor: ExpertPredictor, adapter: MoEAdapter | None = None, moe_flops: int | None = None) -> dict:
    """Per source layer: the predictor's FLOPs per token and their share of the MoE layer's; the mean and max share,
    overall and per part ("predictor", "next_pass", "next_use"). The MoE layer's FLOPs come from `adapter`'s model,
    or are given as `moe_flops`."""
    if (adapter is None) == (moe_flops is None):
        raise ValueError("pass exactly one of adapter= and moe_flops=")
    moe = moe_layer_flops(adapter) if adapter is not None else int(moe_flops)
    reference = next(iter(predictor.parameters()), None)
    token_1D = torch.zeros(
        1,
        predictor.hidden_size,
        dtype=torch.float32 if reference is None else reference.dtype,
        device="cpu" if reference is None else reference.device,
    )
    per_layer = []
    for layer in range(predictor.num_layers):
        parts = {"predictor": 0}
        if not predictor.horizon_at(layer):
            pass
        elif getattr(predictor, "uses_routing", False):  # ids in, not a hidden state
            ids_1K = torch.arange(predictor.top_k, device=token_1D.device).view(1, -1)
            parts["predictor"] = counted_flops(predictor.logits_routing, layer, ids_1K)
        else:
            parts["predictor"] = counted_flops(predictor.logits, layer, token_1D)
        if predictor.predicts_next_use:  # the evictor's table, refreshed at every layer
            parts["next_use"] = counted_flops(predictor.next_use_log_passes, layer, token_1D)
        if predictor.predicts_next_pass:  # the token table is a lookup: only the head's products count
            parts["next_pass"] = counted_flops(predictor.next_pass_logits, token_1D) * (
                layer == predictor.num_layers - 1
            )
        flops = sum(parts.values())
        per_layer.append({"layer": layer, "flops": flops, "share": flops / moe, "parts": parts})
    shares = [row["share"] for row in per_layer]
    part_shares = {
        name: sum(row["parts"][name] for row in per_layer) / moe / len(per_layer) for name in per_layer[0]["parts"]
    }
    return {
        "moe_layer_flops": moe,
        "per_layer": per_layer,
        "mean_share": sum(shares) / len(shares),
        "max_share": max(shares),
        "mean_share_by_part": part_shares,
    }


def predictor_on_shape(
    predictor: ExpertPredictor, num_layers: int, num_experts: int, top_k: int, hidden_size: int
) -> ExpertPredictor:
    """A twin of `predictor` (kind, horizon clamped to L - 1, hyper-parameters, heads) for a model of other shapes,
    built on the meta device: for counting its FLOPs there, never for predicting."""
    from specmd_predict.predictors.bank import _attach_heads
    from specmd_predict.predictors.registry import predictor_class

    identity = dict(predictor.identity)
    identity |= {"num_layers": num_layers, "num_experts": num_experts, "top_k": top_k, "hidden_size": hidden_size}
    heads = predictor.head_hparams()
    if "next_use" in heads:
        heads["next_use"] = heads["next_use"] | {"num_layers": num_layers}
    if "next_pass" in heads:  # the token table is a lookup (no FLOPs); a meta twin need not hold it
        heads["next_pass"] = heads["next_pass"] | {"vocab_size": 0}
    with torch.device("meta"):
        twin = predictor_class(predictor.kind)(identity, min(predictor.horizon, num_layers - 1), **predictor.hparams())
        _attach_heads(twin, heads)
    return twin
