"""runtime.offload with a routing-only bank: the engine hands the layer's routing ids (on the device) to the
policy's device half, generation stays token-for-token identical, and the bank's prefetches are used.

Run: pytest tests/runtime/test_routing_only_offload.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_moe import greedy, tiny_model
from tiny_moe import prompt_ids as make_prompt_ids

import runtime
from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing
from specmd_predict.predictors import save_bank
from specmd_predict.predictors.metrics import multi_hot
from specmd_predict.predictors.routing_only import RoutingOnlyPredictor
from train.module import selection_bce


def fitted_routing_bank(model, prompt_ids, path):
    """A routing-only bank fitted (a few Adam steps) to the model's own routing on this prompt."""
    adapter = get_adapter(model)
    with record_routing(adapter, keep_inputs=False) as record:
        greedy(model, prompt_ids)
    ids_NLK = torch.stack(
        [torch.cat([r.expert_ids_TK for r in record.routings[layer]]) for layer in range(adapter.num_layers)], dim=1
    ).long()
    torch.manual_seed(0)
    predictor = RoutingOnlyPredictor(adapter.identity(), horizon=1)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=0.1)
    for _ in range(40):
        loss = 0
        for layer in range(adapter.num_layers - 1):
            logits_NE = predictor.logits_routing(layer, ids_NLK[:, layer])[:, 0]
            loss = loss + selection_bce(logits_NE, multi_hot(ids_NLK[:, layer + 1], adapter.num_experts), adapter.top_k)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_bank(predictor, path)


def test_a_routing_bank_prefetches_in_the_runtime_with_identical_tokens(tmp_path):
    model = tiny_model("olmoe")
    prompt_ids = make_prompt_ids()[:1]  # batch 1: decode passes also read the previous token's ids
    reference = greedy(model, prompt_ids)
    bank_dir = fitted_routing_bank(model, prompt_ids, tmp_path / "bank")
    offloaded = runtime.offload(copy.deepcopy(model), predictors=bank_dir, capacity=0.4)
    assert torch.equal(greedy(offloaded, prompt_ids), reference)
    stats = runtime.offload_stats(offloaded)
    assert stats.prefetch == "predictor" and stats.prefetches_issued > 0 and stats.prefetches_used > 0


def test_a_routing_bank_of_other_shapes_is_one_clear_line(tmp_path):
    model = tiny_model("olmoe")
    adapter = get_adapter(model)
    identity = {**adapter.identity(), "model_type": "routing-trace", "num_experts": adapter.num_experts * 2}
    bank_dir = save_bank(RoutingOnlyPredictor(identity, horizon=1), tmp_path / "bank")
    with pytest.raises(ValueError) as err:
        runtime.offload(copy.deepcopy(model), predictors=bank_dir, capacity=0.4)
    assert "\n" not in str(err.value) and "num_experts" in str(err.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_routing_prefetch_adds_no_host_read_on_cuda(tmp_path):
    """The policy reads the routing ids where the engine has them (on the device) and keeps the previous pass's
    there: per decode step no implicit sync and at most one wait per MoE layer more than the plain model."""
    from test_offload_gpu import _decode_steps  # the GPU wait counter of the runtime's CUDA tests

    model = tiny_model("olmoe")
    ids = make_prompt_ids()[:1]
    bank_dir = fitted_routing_bank(model, ids, tmp_path / "bank")
    plain_implicit, plain_waits, plain_tokens = _decode_steps(copy.deepcopy(model).cuda(), ids.cuda(), steps=6)
    offloaded = runtime.offload(model, predictors=bank_dir, capacity=0.5, device="cuda")
    num_layers = get_adapter(offloaded).num_layers
    implicit, waits, tokens = _decode_steps(offloaded, ids.cuda(), steps=6)
    assert tokens == plain_tokens and implicit == plain_implicit
    assert all(mine - theirs <= num_layers for mine, theirs in zip(waits, plain_waits, strict=True))
    assert runtime.offload_engine(offloaded).host_reads == 7 * num_layers
    assert runtime.offload_stats(offloaded).prefetches_used > 0
