"""Predictor cost: FLOPs per token counted by torch's FlopCounterMode, as a share of the MoE layer's, hand-checked."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, OlmoeConfig

from specmd_predict.adapters import get_adapter
from specmd_predict.predictors import make_predictor
from specmd_predict.predictors.cost import moe_layer_flops, predictor_cost
from specmd_predict.predictors.next_pass import NextPassHead

D, I, E, K, L = 16, 8, 8, 2, 4


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    config = OlmoeConfig(
        vocab_size=64,
        hidden_size=D,
        num_hidden_layers=L,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=I,
        num_experts=E,
        num_experts_per_tok=K,
    )
    return get_adapter(AutoModelForCausalLM.from_config(config).eval())


def test_moe_layer_flops_are_k_gated_experts_and_the_router(adapter):
    assert moe_layer_flops(adapter) == 2 * (K * 3 * D * I + E * D)  # gate, up and down projections


def test_linear_predictor_share_per_layer(adapter):
    predictor = make_predictor("linear", adapter=adapter, horizon=2)
    cost = predictor_cost(predictor, adapter)
    moe = 2 * (K * 3 * D * I + E * D)
    expected = [2 * D * min(2, L - 1 - l) * E / moe for l in range(L)]  # one D x (H_eff * E) product, none at L-1
    assert [row["share"] for row in cost["per_layer"]] == pytest.approx(expected)
    assert cost["max_share"] == pytest.approx(max(expected))
    predictor.attach_next_pass(NextPassHead.from_adapter(adapter, rank=4))  # charged to the last MoE layer
    last = predictor_cost(predictor, adapter)["per_layer"][-1]["share"]
    assert last == pytest.approx((2 * D * E + 2 * D * 4 + 2 * 4 * E) / moe)


def test_cost_on_real_shapes_counts_the_same_design_on_the_meta_device(adapter):
    """The twin on OLMoE-1B-7B's shapes (L 16, E 64, K 8, D 2048, expert ffn 1024): hand-checked per layer."""
    from specmd_predict.predictors.cost import predictor_on_shape

    predictor = make_predictor("linear", adapter=adapter, horizon=2)
    predictor.attach_next_pass(NextPassHead.from_adapter(adapter, rank=4))
    twin = predictor_on_shape(predictor, num_layers=16, num_experts=64, top_k=8, hidden_size=2048)
    assert next(twin.parameters()).is_meta and twin.predicts_next_pass and twin.horizon == 2
    moe = 2 * (8 * 3 * 2048 * 1024 + 64 * 2048)
    cost = predictor_cost(twin, moe_flops=moe)
    expected = [2 * 2048 * min(2, 15 - l) * 64 for l in range(16)]
    expected[-1] += 2 * 2048 * 64 + 2 * 2048 * 4 + 2 * 4 * 64  # the next-pass head, at the last layer
    assert [row["flops"] for row in cost["per_layer"]] == expected
    parts = cost["mean_share_by_part"]
    assert parts["predictor"] + parts["next_pass"] == pytest.approx(cost["mean_share"])
    assert cost["mean_share"] < 0.01  # a linear map per horizon is ~0.26% of OLMoE's MoE layer
    with pytest.raises(ValueError, match="exactly one"):
        predictor_cost(twin)
