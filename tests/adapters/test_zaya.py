"""ZAYA1's routers read the previous router's state and may choose a skip class: the adapter, the runtime.

Run: pytest tests/adapters/test_zaya.py
The tiny model (tests/tiny_models.py) has three MoE layers; here the skip class's balancing bias is raised so that
some tokens choose it (the model then runs expert 0 with weight 0).
"""

from __future__ import annotations

import copy

import pytest
import torch

import runtime
from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    model = tiny_model("zaya", eos_token_id=None)  # no early stop: generations run to max_new_tokens
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate.balancing_biases[-1] = 0.25  # the skip class wins for some tokens
    return model


def prompt_ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 128, (2, 10), generator=torch.Generator().manual_seed(seed))


def recorded(model, adapter):
    with torch.no_grad(), record_routing(adapter) as record:
        model(prompt_ids())
    return record


def test_skip_choices_and_the_previous_router_state_are_reproduced(model):
    adapter = get_adapter(model)
    watch = adapter.watch_routing_inputs()
    record = recorded(model, adapter)
    watch.remove()
    skipped = 0
    for layer in range(adapter.num_layers):
        (hidden_TD,) = record.inputs[layer]
        expected = record.routings[layer][0]
        with torch.no_grad():
            got = adapter.route(layer, hidden_TD)
        assert torch.equal(got.expert_ids_TK, expected.expert_ids_TK)
        torch.testing.assert_close(got.weights_TK, expected.weights_TK)
        biases_C = adapter.router(layer).balancing_biases
        skip_T = (got.logits_TE.softmax(-1) + biases_C).argmax(-1) == adapter.num_experts  # the skip class won
        assert torch.all(got.weights_TK[skip_T] == 0) and torch.all(got.expert_ids_TK[skip_T] == 0)
        skipped += int(skip_T.sum())
    assert skipped > 0, "the test must exercise the skip class"


def test_routing_without_the_previous_state_differs_and_the_given_state_restores_it(model):
    """Layer 2 reads layer 1's state: dropping it (routers 0..1 rerun on layer 2's input) changes the choice;
    passing the watched state explicitly gives the model's routing."""
    adapter = get_adapter(model)  # nothing watched: the states are recomputed from hidden_TD
    states = []
    handle = adapter.router(1).register_forward_hook(lambda module, args, output: states.append(output[3]))
    record = recorded(model, adapter)
    handle.remove()
    (hidden_TD,) = record.inputs[2]
    state_TR = states[0].reshape(hidden_TD.shape[0], -1)
    with torch.no_grad():
        explicit = adapter.route(2, hidden_TD, router_states_TR=state_TR)
        recomputed = adapter.route(2, hidden_TD)
    assert torch.equal(explicit.expert_ids_TK, record.routings[2][0].expert_ids_TK)
    assert not torch.equal(recomputed.logits_TE, explicit.logits_TE)


def test_offloaded_generation_is_identical(model):
    def greedy(m):
        return m.generate(prompt_ids(2), max_new_tokens=8, do_sample=False, pad_token_id=0)

    reference = greedy(model)
    offloaded = runtime.offload(copy.deepcopy(model), capacity=0.3)
    assert torch.equal(greedy(offloaded), reference)
    stats = runtime.offload_stats(offloaded)
    assert stats.prefetch == "router-reuse" and stats.passes == 8
    assert stats.hits + stats.misses + stats.late_prefetches == stats.requests
