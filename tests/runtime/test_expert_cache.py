"""Tests of the cache's books (runtime/expert_cache.py): slots, pins, in-flight copies, counters.

pytest tests/runtime/test_expert_cache.py
"""

from __future__ import annotations

import pytest

from runtime.expert_cache import CacheStats, ExpertCache
from runtime.policies import make_eviction
from specmd_predict.routing import ExpertKey as K


def test_lru_books_on_tiny_trace():
    cache = ExpertCache(2, make_eviction("lru"), expert_bytes=10)
    cache.start_pass()
    cache.start_layer(0)
    statuses = [cache.request(K(0, e)).status for e in (1, 2, 1, 3, 2)]
    # 1 miss, 2 miss, 1 hit, 3 evicts LRU 2, 2 misses again (evicted in this pass: a collision), evicting 1
    assert statuses == ["miss", "miss", "hit", "miss", "miss"]
    s = cache.stats
    assert (s.hits, s.misses, s.collision_misses, s.evictions, s.bytes_moved) == (1, 4, 1, 2, 40)
    assert set(cache.resident()) == {K(0, 3), K(0, 2)}
    assert s.layer_collisions == [1] and s.layer_misses == [4]


def test_collision_only_within_the_same_pass():
    cache = ExpertCache(1, make_eviction("lru"))
    cache.start_pass()
    cache.start_layer(0)
    cache.request(K(0, 0))
    cache.start_layer(1)
    cache.request(K(1, 0))  # evicts (0, 0)
    cache.start_pass()
    cache.start_layer(0)
    cache.request(K(0, 0))  # evicted in the previous pass: a plain miss
    assert cache.stats.collision_misses == 0
    cache.start_layer(1)
    cache.request(K(1, 0))  # evicted earlier in this pass: a collision
    assert cache.stats.collision_misses == 1
    assert cache.stats.layer_collisions == [0, 1]


def test_slots_are_reused_and_distinct():
    cache = ExpertCache(3, make_eviction("fifo"))
    cache.start_pass()
    cache.start_layer(0)
    slots = [cache.request(K(0, e)).slot for e in range(3)]
    assert sorted(slots) == [0, 1, 2]
    slot = cache.request(K(0, 9)).slot
    assert slot == slots[0]  # FIFO evicted expert 0, its slot is handed on
    assert sorted(cache.resident().values()) == [0, 1, 2]


def test_prefetch_late_used_wasted():
    cache = ExpertCache(2, make_eviction("lru"), expert_bytes=4)
    cache.start_pass()
    cache.start_layer(0)
    slot = cache.prefetch(K(1, 0))
    assert slot is not None and cache.is_in_flight(K(1, 0))
    assert cache.prefetch(K(1, 0)) is None  # already resident
    cache.prefetch(K(1, 1))
    assert cache.prefetch(K(1, 2)) is None  # both residents in flight: nothing evictable
    cache.start_layer(1)
    assert cache.request(K(1, 0)) == (slot, "late")
    cache.complete(K(1, 0))
    cache.complete(K(1, 1))
    assert cache.request(K(1, 0)).status == "hit"
    cache.request(K(1, 3))  # evicts the never-used prefetch of (1, 1)
    s = cache.stats
    assert (s.prefetches_issued, s.prefetches_used, s.prefetches_wasted) == (2, 1, 1)
    assert (s.hits, s.late_prefetches, s.misses) == (1, 1, 1)
    assert s.bytes_moved == 12
    assert s.prefetch_precision == 0.5 and s.prefetch_recall == 0.5


def test_pinned_is_never_a_victim_and_full_pins_raise():
    cache = ExpertCache(2, make_eviction("lru"))
    cache.start_pass()
    cache.start_layer(0)
    cache.request(K(0, 0))
    cache.pin(K(0, 0))
    cache.request(K(0, 1))
    cache.request(K(0, 2))  # LRU would pick (0, 0), but it is pinned
    assert K(0, 0) in cache and K(0, 1) not in cache
    cache.pin(K(0, 2))
    with pytest.raises(ValueError, match="every resident is pinned"):
        cache.request(K(0, 3))
    cache.unpin(K(0, 2))
    assert cache.request(K(0, 3)).status == "miss"


def test_predictions_are_forwarded():
    seen = []

    class Spy(type(make_eviction("lru"))):
        def on_predictions(self, probabilities):
            seen.append(dict(probabilities))

    cache = ExpertCache(2, Spy())
    cache.predictions({K(1, 2): 0.9})
    assert seen == [{K(1, 2): 0.9}]


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_slot_count(bad):
    with pytest.raises(ValueError, match="at least 1 slot"):
        ExpertCache(bad, make_eviction("lru"))


def test_merge_sums_counters():
    a, b = ExpertCache(1, make_eviction("lru")), ExpertCache(1, make_eviction("lru"))
    for cache, layer in ((a, 0), (b, 1)):
        cache.start_pass()
        cache.start_layer(layer)
        cache.request(K(layer, 0))
        cache.request(K(layer, 0))
    total = a.stats.merge(b.stats)
    assert (total.hits, total.misses, total.layer_hits) == (2, 2, [1, 1])


def test_replacing_stats_resets_counting():
    cache = ExpertCache(2, make_eviction("lru"), num_layers=2)
    cache.start_pass()
    cache.start_layer(0)
    cache.request(K(0, 0))
    cache.request(K(0, 0))
    cache.stats = CacheStats()  # what a reset after warm-up does
    cache.stats.grow(2)
    cache.request(K(0, 0))
    cache.request(K(1, 0))
    assert (cache.stats.hits, cache.stats.misses, cache.stats.layer_hits) == (1, 1, [1, 0])
