"""The batched demand path (ExpertCache.request_group + EvictionPolicy.victims/on_group) against the per-request
path it stands in for: same slots, residents, counters and policy choices, layer by layer.

    pytest tests/runtime/test_batched_requests.py

The per-request twin of a batched policy is a subclass that does not declare `batched` itself (the cache then
pins and requests key by key); both are driven by the real CacheDriver over seeded random traces, with and
without prefetches (landed, not yet used: the batched path counts their use and waste), at capacities that
fill up, thrash, and split a layer into groups.
"""

from __future__ import annotations

import random

import pytest
import torch

from eval.simulate import ReplayClock
from runtime.driver import CacheDriver
from runtime.expert_cache import ExpertCache
from runtime.policies import EVICTION_POLICIES, make_eviction
from runtime.policies.lru import LRU
from specmd_predict.routing import ExpertKey as K

BATCHED = sorted(name for name, cls in EVICTION_POLICIES.items() if vars(cls).get("batched"))
NUM_LAYERS, NUM_EXPERTS = 4, 12


def test_the_fast_policies_declare_batched():
    # a class that inherits `batched` (e.g. from a shared base) silently takes the slow per-request path and drops
    # out of BATCHED below: the ones the simulator relies on must keep declaring it themselves
    assert {"belady", "fifo", "fld", "least-stale", "lfu", "lru", "score"} <= set(BATCHED)
    assert {"least-stale-predicted", "least-stale-predicted-heuristic"} <= set(BATCHED)


def random_passes(seed: int, num_passes: int = 40) -> list[list[tuple[K, ...]]]:
    rng = random.Random(seed)
    passes = []
    for p in range(num_passes):
        width = rng.choice([1, 2, 3, 9]) if p % 7 else 10  # decode-like passes and wide prefill-like ones
        passes.append(
            [tuple(K(layer, e) for e in sorted(rng.sample(range(NUM_EXPERTS), width))) for layer in range(NUM_LAYERS)]
        )
    return passes


def per_request_twin(policy):
    """The same policy object's class, minus its own `batched` declaration: the cache takes the per-request path."""
    twin = type(f"PerRequest{type(policy).__name__}", (type(policy),), {})
    policy.__class__ = twin
    return policy


def replay(
    policy_name: str, passes, slots: int, batched: bool, prefetch_seed: int | None, tables: bool = False, **kwargs
):
    future = [key for layers in passes for keys in layers for key in keys]
    policy = make_eviction(policy_name, num_layers=NUM_LAYERS, future=future, **kwargs)
    if not batched:
        policy = per_request_twin(policy)
    cache = ExpertCache(slots, policy, num_layers=NUM_LAYERS)
    driver = CacheDriver([cache] * NUM_LAYERS, prefetch_budget=2)
    clock = ReplayClock([cache] * NUM_LAYERS, None)
    rng = random.Random(prefetch_seed)
    history = []
    used_batch = 0
    original = cache.request_group

    def counting(keys, hold=True):
        nonlocal used_batch
        answer = original(keys, hold)
        used_batch += answer is not None
        return answer

    cache.request_group = counting
    for layers in passes:
        driver.start_pass()
        for layer, keys in enumerate(layers):
            propose = None
            if prefetch_seed is not None and layer + 1 < NUM_LAYERS and rng.random() < 0.5:
                candidates = [(K(layer + 1, e), 0.9) for e in rng.sample(range(NUM_EXPERTS), 2)]
                answer = (candidates, None)
                if tables:  # probabilities below and above the threshold, and a learned next-use table
                    probabilities = {K(j, e): rng.random() for j in range(layer + 1, NUM_LAYERS) for e in range(4)}
                    next_LE = torch.rand(NUM_LAYERS, NUM_EXPERTS, generator=torch.Generator().manual_seed(layer))
                    answer = (candidates, probabilities, next_LE * 3 * NUM_LAYERS)
                propose = lambda a=answer: a  # noqa: E731
            driver.run_layer(layer, keys, clock, propose)
            history.append((cache.resident(), cache.stats.as_dict()))
    return history, used_batch


@pytest.mark.parametrize("policy_name", BATCHED)
@pytest.mark.parametrize("slots", [10, 14, 30])
@pytest.mark.parametrize("prefetch_seed", [None, 3])
def test_batched_path_matches_per_request_path(policy_name, slots, prefetch_seed):
    if policy_name == "belady" and prefetch_seed is not None:
        pytest.skip("belady is the no-prefetch oracle: prefetch inserts are outside its request sequence")
    passes = random_passes(seed=slots)
    batched, used = replay(policy_name, passes, slots, batched=True, prefetch_seed=prefetch_seed)
    reference, used_reference = replay(policy_name, passes, slots, batched=False, prefetch_seed=prefetch_seed)
    assert used > 0 and used_reference == 0  # both paths really ran
    assert len(batched) == len(reference)
    for step, (got, want) in enumerate(zip(batched, reference, strict=True)):
        assert got == want, f"{policy_name} at {slots} slots diverges at layer step {step}"
    final = reference[-1][1]
    assert final["evictions"] > 0 and final["collision_misses"] > 0  # the case has teeth
    if prefetch_seed is not None:
        assert final["prefetches_used"] > 0 and final["prefetches_wasted"] > 0


@pytest.mark.parametrize("policy_name", ["least-stale-predicted", "least-stale-predicted-heuristic"])
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("slots", [10, 30])
def test_least_stale_predicted_batched_matches_with_predictions_and_tables(policy_name, split, slots):
    """Its batched path also under forwarded probabilities below the threshold and learned next-use tables (the
    heuristic variant ignores the tables), with and without the stale/current split."""
    passes = random_passes(seed=slots)
    runs = [
        replay(policy_name, passes, slots, batched=b, prefetch_seed=5, tables=True, split=split) for b in (True, False)
    ]
    (batched, used), (reference, used_reference) = runs
    assert used > 0 and used_reference == 0
    for step, (got, want) in enumerate(zip(batched, reference, strict=True)):
        assert got == want, f"{policy_name} (split={split}) at {slots} slots diverges at layer step {step}"
    assert reference[-1][1]["evictions"] > 0


def test_a_subclass_that_changes_a_hook_takes_the_per_request_path():
    class Recording(LRU):
        def on_evict(self, key):
            super().on_evict(key)

    cache = ExpertCache(4, Recording())
    assert cache.request_group((K(0, 1), K(0, 2))) is None
    assert ExpertCache(4, LRU()).request_group((K(0, 1), K(0, 2))) == [(K(0, 1), 0), (K(0, 2), 1)]


def test_a_policy_naming_a_pinned_victim_is_an_error_and_leaves_nothing_pinned():
    class Broken(LRU):
        batched = True

        def victims(self, count, excluded):
            return list(excluded)[:count]

    cache = ExpertCache(2, Broken())
    cache.request_group((K(0, 1), K(0, 2)))
    cache.unpin_all()
    with pytest.raises(RuntimeError, match="Broken chose victims"):
        cache.request_group((K(0, 1), K(0, 3)))
    assert cache.num_pinned == 0
