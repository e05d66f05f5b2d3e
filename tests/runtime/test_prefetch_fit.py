"""The runtime issues only the prefetches that fit beside the layer being computed (runtime/driver.py's room).

The simulator runs the same driver: tests/eval/test_prefetch_fit.py.

pytest tests/runtime/test_prefetch_fit.py
"""

from __future__ import annotations

import copy

import torch

import runtime
from specmd_predict.policies import PrefetchPolicy
from specmd_predict.routing import ExpertKey
from tests.runtime.tiny_moe import greedy, prompt_ids, tiny_model


class EveryLaterExpert(PrefetchPolicy):
    """Proposes every expert of every later layer, nearest layer first: far more than any small cache holds."""

    name = "every-later-expert"

    def __init__(self, num_layers: int, num_experts: int) -> None:
        self.num_layers, self.num_experts = num_layers, num_experts

    def propose(self, layer, hidden_TD, routing):
        return [(ExpertKey(j, e), 0.5) for j in range(layer + 1, self.num_layers) for e in range(self.num_experts)]


def test_the_engine_issues_no_more_candidates_than_fit_beside_the_pinned_layer():
    model = tiny_model("mixtral")
    expected = greedy(model, prompt_ids())
    config = model.config
    policy = EveryLaterExpert(config.num_hidden_layers, config.num_local_experts)
    # a per-layer budget above any layer's experts: only the fit rule limits the copies
    offloaded = runtime.offload(copy.deepcopy(model), capacity=0.5, eviction="lru", prefetch=policy, prefetch_budget=99)
    engine = runtime.offload_engine(offloaded)
    seen = []
    issue = engine.driver.prefetch

    def spy(layer, candidates, probabilities, next_use=None, *, transport, pinned=0):
        before = engine.cache.stats.prefetches_issued
        issue(layer, candidates, probabilities, next_use, transport=transport, pinned=pinned)
        seen.append((len(candidates), engine.cache.stats.prefetches_issued - before, engine.cache.num_pinned))

    engine.driver.prefetch = spy
    assert torch.equal(greedy(offloaded, prompt_ids()), expected)  # offloading changes no token
    slots = engine.cache.num_slots
    assert seen and all(issued <= slots - pinned for _, issued, pinned in seen)
    assert any(proposed > slots - pinned for proposed, _, pinned in seen)  # cut: the policy proposed more
    assert runtime.offload_stats(offloaded).prefetches_issued > 0
