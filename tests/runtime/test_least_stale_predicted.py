"""least-stale-predicted's calibration of the frequency, and of a learned next-use table: it trusts a predicted wait
as far as reuses bear it out.

    pytest tests/runtime/test_least_stale_predicted.py

(The victim-by-victim check of the fast structure against the plain scan is in tests/runtime/test_fast_policies.py.)
"""

from __future__ import annotations

import random

import torch

from runtime.expert_cache import ExpertCache
from runtime.policies import make_eviction
from specmd_predict.predictors.next_use import true_next_use_tables
from specmd_predict.routing import ExpertKey


def replay(policy, rng, weights, num_slots, num_passes=400, num_layers=4, top_k=2):
    """One-token passes: each layer picks top_k distinct experts with the given (fixed) popularity."""
    cache = ExpertCache(num_slots, policy, num_layers=num_layers)
    experts = range(len(weights))
    for _ in range(num_passes):
        cache.start_pass()
        for layer in range(num_layers):
            cache.start_layer(layer)
            chosen = set()
            while len(chosen) < top_k:
                chosen.add(rng.choices(experts, weights)[0])
            keys = sorted(ExpertKey(layer, e) for e in chosen)
            cache.predictions(dict.fromkeys(keys, 1.0))
            for key in keys:
                cache.request(key)
                cache.pin(key)
            cache.unpin_all()
    return cache


def test_skewed_stable_routing_keeps_trusting_the_frequency():
    # a few experts take most of the traffic, always the same ones: a key's frequency predicts its next use
    policy = make_eviction("least-stale-predicted", num_layers=4)
    weights = [1.0 / (e + 1) ** 2 for e in range(16)]
    replay(policy, random.Random(0), weights, num_slots=32)
    assert policy._slope > 0.5
    assert policy._memory > 1.0


def test_uniform_routing_with_a_small_cache_falls_back_to_layer_distance():
    # every expert equally likely and a cache smaller than two passes: a reuse gap beyond what a resident stays
    # says nothing, the slope drops near its floor (0.01) and the wait is (almost) the same for every expert of a layer
    policy = make_eviction("least-stale-predicted", num_layers=4)
    cache = replay(policy, random.Random(1), [1.0] * 16, num_slots=6)
    assert policy._slope < 0.1
    waits = [policy._extra_of(policy.key_ids.ids[key]) for key in cache.slots if key[0] == 0]
    assert max(waits) - min(waits) < 4  # layer-steps: less than half of one pass


def test_uniform_routing_orders_stale_victims_by_layer_distance():
    # with the frequency untrusted, the stale victim at layer 2 is the one whose layer comes back last: layer 1
    # (needed again only after a full sweep), before layer 3 (needed later in this very pass)
    policy = make_eviction("least-stale-predicted", num_layers=4)
    cache = replay(policy, random.Random(2), [1.0] * 16, num_slots=8)
    assert policy._slope < 0.1
    cache.start_pass()
    cache.start_layer(0)
    cache.start_layer(1)
    cache.start_layer(2)
    stale = [key for key in cache.slots if key[0] in (1, 3)]
    assert {key[0] for key in stale} == {1, 3}  # both layers hold stale residents
    assert policy.victim(stale)[0] == 1


def replay_with_tables(policy, used_PLE, tables_PLLE, num_slots):
    """Passes from a usage array; after each layer's requests the next-use table of that clock comes (as the
    drivers send it: demand first, then the prefetch policy's table)."""
    num_passes, num_layers, num_experts = used_PLE.shape
    cache = ExpertCache(num_slots, policy, num_layers=num_layers)
    for p in range(num_passes):
        cache.start_pass()
        for layer in range(num_layers):
            cache.start_layer(layer)
            keys = [ExpertKey(layer, e) for e in range(num_experts) if used_PLE[p, layer, e]]
            cache.predictions(dict.fromkeys(keys, 1.0))
            for key in keys:
                cache.request(key)
                cache.pin(key)
            cache.unpin_all()
            cache.next_use(layer, tables_PLLE[p, layer])
    return cache


def test_exact_tables_keep_the_calibration_at_the_table():
    # expert e is used every 1 + e % 4 passes: the true tables predict every reuse gap, the line is y = x
    num_passes, num_layers, num_experts = 60, 3, 8
    used_PLE = torch.zeros(num_passes, num_layers, num_experts, dtype=torch.bool)
    for e in range(num_experts):
        used_PLE[:: 1 + e % 4, :, e] = True
    policy = make_eviction("least-stale-predicted", num_layers=num_layers)
    replay_with_tables(policy, used_PLE, true_next_use_tables(used_PLE), num_slots=num_layers * num_experts - 2)
    assert policy._table_sums[0] > 100
    assert policy._table_slope > 0.9 and policy._table_shift < 0.2


def test_uninformative_tables_with_a_small_cache_fall_back_to_layer_distance():
    # uniform routing and tables whose waits are noise: the slope drops near its floor, and the calibrated entries
    # of a layer behind the clock differ by less than half a pass (the order is the layer distance, ties to LRU)
    rng = torch.Generator().manual_seed(0)
    num_passes, num_layers, num_experts = 300, 4, 16
    used_PLE = torch.zeros(num_passes, num_layers, num_experts, dtype=torch.bool)
    for p in range(num_passes):
        for j in range(num_layers):
            used_PLE[p, j, torch.randperm(num_experts, generator=rng)[:2]] = True
    tables_PLLE = true_next_use_tables(used_PLE)
    tables_PLLE = tables_PLLE + num_layers * 10 * torch.rand(tables_PLLE.shape, generator=rng)  # noise on top
    policy = make_eviction("least-stale-predicted", num_layers=num_layers)
    replay_with_tables(policy, used_PLE, tables_PLLE, num_slots=6)
    assert policy._table_slope < 0.1
    table = tables_PLLE[-1, 2].double().reshape(-1).numpy()
    calibrated = policy.calibrated_table(2, table, (num_layers, num_experts)).reshape(num_layers, num_experts)
    assert calibrated[0].max() - calibrated[0].min() < num_layers / 2
    assert calibrated[0].min() > calibrated[3].max()  # layer 0 comes back after layer 3: it goes first
