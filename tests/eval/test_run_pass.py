"""The driver's pass loop (`CacheDriver.run_pass`, the simulator's untimed no-prefetch path, asking the cache by the
trace's key numbers through `ExpertCache.request_ids`) against `run_layer` per layer (the path the runtime takes):
same counters, residents, slots and victims, for every eviction policy, both layouts, capacities that fill up,
thrash and split a layer into groups.

    pytest tests/eval/test_run_pass.py
"""

from __future__ import annotations

import random

import pytest

from eval.simulate import ReplayClock, simulate
from eval.trace import Trace
from runtime.driver import CacheDriver
from runtime.expert_cache import CacheStats, ExpertCache
from runtime.policies import EVICTION_POLICIES, make_eviction
from specmd_predict.routing import ExpertKey as K

NUM_LAYERS, NUM_EXPERTS = 4, 12


def random_trace(seed: int) -> Trace:
    rng = random.Random(seed)
    passes = []
    for p in range(60):
        width = rng.choice([1, 2, 3, 5]) if p % 9 else 11  # decode-like passes and wide prefill-like ones
        passes.append([rng.sample(range(NUM_EXPERTS), width) for _ in range(NUM_LAYERS)])
    passes[5][2] = []  # a layer that routes nothing
    return Trace.from_passes(passes, num_experts=NUM_EXPERTS, top_k=3)


def replay_by_layer(trace: Trace, policy_name: str, num_slots: int, per_layer: bool):
    """The reference: run_layer per layer with the simulator's untimed clock (what simulate() did before run_pass)."""
    flat = trace.flat_requests()

    def policy(layer):
        future = flat if layer is None else [k for k in flat if k[0] == layer]
        return make_eviction(policy_name, num_layers=NUM_LAYERS, num_experts=NUM_EXPERTS, top_k=3, future=future)

    if per_layer:
        caches = [ExpertCache(num_slots // NUM_LAYERS, policy(j), num_layers=NUM_LAYERS) for j in range(NUM_LAYERS)]
    else:
        caches = [ExpertCache(num_slots, policy(None), num_layers=NUM_LAYERS)] * NUM_LAYERS
    driver = CacheDriver(caches)
    clock = ReplayClock(caches, None)
    for layers in trace.requests():
        driver.start_pass()
        for layer, keys in enumerate(layers):
            driver.run_layer(layer, keys, clock)
    distinct = list({id(c): c for c in caches}.values())
    stats = distinct[0].stats
    for other in distinct[1:]:
        stats = stats.merge(other.stats)
    return stats.as_dict(), [c.resident() for c in distinct]


@pytest.mark.parametrize("policy_name", sorted(EVICTION_POLICIES))
@pytest.mark.parametrize("layout", ["global", "per-layer"])
@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_run_pass_counts_as_run_layer(policy_name, layout, fraction, monkeypatch):
    trace = random_trace(seed=sorted(EVICTION_POLICIES).index(policy_name) + int(fraction * 100))
    num_slots = int(fraction * NUM_LAYERS * NUM_EXPERTS)
    # every cache the simulator builds is recorded, to read its final residents
    built: list[ExpertCache] = []
    original_init = ExpertCache.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(ExpertCache, "__init__", recording_init)
    result = simulate(trace, policy_name, "none", fraction, layout=layout)
    monkeypatch.undo()
    expected_stats, expected_residents = replay_by_layer(trace, policy_name, num_slots, layout == "per-layer")
    assert result.stats.as_dict() == expected_stats
    # same keys in the same slots, in the same order
    assert [list(c.resident().items()) for c in built] == [list(r.items()) for r in expected_residents]
    assert expected_stats["evictions"] > 0


def test_list_policies_go_by_number_and_wide_layers_by_key():
    """LRU's batched layers take request_ids (no key hashed); a layer wider than the cache goes by key in groups."""
    trace = Trace.from_passes([[[0, 1, 2], [3]], [[0, 4, 5, 6, 7, 8], [3, 9]], [[1], [2, 3]]], num_experts=10)
    cache = ExpertCache(4, make_eviction("lru"), num_layers=2)
    driver = CacheDriver([cache, cache])
    calls = {"ids": 0, "ids_done": 0, "group": 0}
    request_ids, request_group = cache.request_ids, cache.request_group

    def counting_ids(*args):
        calls["ids"] += 1
        answer = request_ids(*args)
        calls["ids_done"] += answer >= 0
        return answer

    def counting_group(*args):
        calls["group"] += 1
        return request_group(*args)

    cache.request_ids, cache.request_group = counting_ids, counting_group
    ids = trace.request_ids()
    clock = ReplayClock([cache, cache], None)
    for p, layers in enumerate(trace.requests()):
        driver.start_pass()
        driver.run_pass(layers, clock, ids, p * 2)
    # 6 layers: 5 fit the 4 slots (by number), pass 1's layer 0 has 6 keys (declined, then 2 groups by key)
    assert calls == {"ids": 6, "ids_done": 5, "group": 2}
    assert cache.stats.requests == 3 + 1 + 6 + 2 + 1 + 2
    assert set(cache.resident()) == {K(1, 3), K(1, 9), K(0, 1), K(1, 2)}  # LRU, worked by hand


def test_request_ids_numbers_keys_in_request_order():
    """Ids come from the table in the order keys are first requested, whatever the trace's numbering."""
    trace = Trace.from_passes([[[5, 7], [2]], [[1, 5], [0]]], num_experts=8)
    cache = ExpertCache(8, make_eviction("fifo"), num_layers=2)
    driver = CacheDriver([cache, cache])
    ids = trace.request_ids()
    assert list(ids.trace_ids) == [5, 7, 8 + 2, 1, 5, 8 + 0]
    assert list(ids.starts) == [0, 2, 3, 5, 6]
    assert ids.key_of[8 + 2] == K(1, 2) and ids.key_of[3] == K(0, 3)
    clock = ReplayClock([cache, cache], None)
    for p, layers in enumerate(trace.requests()):
        driver.start_pass()
        driver.run_pass(layers, clock, ids, p * 2)
    table = cache.eviction.key_ids
    assert table.keys[1:] == [K(0, 5), K(0, 7), K(1, 2), K(0, 1), K(1, 0)]
    assert cache.resident() == {K(0, 5): 0, K(0, 7): 1, K(1, 2): 2, K(0, 1): 3, K(1, 0): 4}


@pytest.mark.parametrize("policy_name", ["lru", "least-stale-predicted"])
def test_books_left_behind_by_request_ids_read_as_the_key_path(policy_name):
    """request_ids leaves the residency dict and the counters behind until something reads them: read after a pass,
    after the log of its writes filled up (more misses than 16 x slots + 1024 between two reads) or through stats
    replaced mid-run, they equal the by-key path's at that point, the dict in the same order."""
    rng = random.Random(7)
    trace = Trace.from_passes(
        [[rng.sample(range(NUM_EXPERTS), 3) for _ in range(NUM_LAYERS)] for _ in range(700)], num_experts=NUM_EXPERTS
    )

    def books():
        policy = make_eviction(policy_name, num_layers=NUM_LAYERS, num_experts=NUM_EXPERTS, top_k=3)
        cache = ExpertCache(4, policy, num_layers=NUM_LAYERS)
        return cache, CacheDriver([cache] * NUM_LAYERS), ReplayClock([cache] * NUM_LAYERS, None)

    (by_ids, ids_driver, ids_clock), (by_keys, keys_driver, keys_clock) = books(), books()
    numbering = trace.request_ids()
    held = {}
    for p, layers in enumerate(trace.requests()):
        ids_driver.start_pass()
        ids_driver.run_pass(layers, ids_clock, numbering, p * NUM_LAYERS)
        keys_driver.start_pass()
        for layer, keys in enumerate(layers):
            keys_driver.run_layer(layer, keys, keys_clock)
        if p in (3, 650):
            assert list(by_ids.slots.items()) == list(by_keys.slots.items())
            assert by_ids.stats.as_dict() == by_keys.stats.as_dict()
        if p == 100:  # kept, not read again through the cache
            held = {"ids": by_ids.stats, "keys": by_keys.stats}
        if p == 300:  # the counts since pass 100 go to the held stats, the later ones to the new
            by_ids.stats, by_keys.stats = CacheStats(), CacheStats()
    assert held["ids"].as_dict() == held["keys"].as_dict()
    assert held["keys"].misses > 16 * 4 + 1024  # the log filled up between two reads
    assert list(by_ids.resident().items()) == list(by_keys.resident().items())
    assert len(by_ids) == len(by_keys) == 4 and all(key in by_ids for key in by_keys.slots)
    assert [by_ids.slot_of(key) for key in by_keys.slots] == list(by_keys.slots.values())
    assert by_ids.stats.as_dict() == by_keys.stats.as_dict()
