"""The cache driver (runtime/driver.py) on hand-made cases: request order and pins, waiting for a slot through
the transport, late prefetches, the prefetch budget, capacity to slots.

Run: pytest tests/runtime/test_driver.py
"""

from __future__ import annotations

import pytest

from runtime.driver import CacheDriver, resolve_capacity
from runtime.expert_cache import ExpertCache
from runtime.policies import make_eviction
from runtime.policies.lru import LRU
from specmd_predict.routing import ExpertKey as K


class RecordingLRU(LRU):
    name = "recording-lru"

    def __init__(self):
        super().__init__()
        self.accessed: list[K] = []
        self.evicted: list[K] = []
        self.on_access = self._record_access  # LRU binds its own on the instance

    def _record_access(self, key: K) -> None:
        self.accessed.append(key)
        self._order.move_to_end(key)

    def on_evict(self, key: K) -> None:
        self.evicted.append(key)
        super().on_evict(key)


class FakeTransport:
    """Copies that stay in flight until landed, with a log of what the driver asked for."""

    def __init__(self, keep_in_flight: bool):
        self.keep_in_flight = keep_in_flight
        self.in_flight: dict[K, int] = {}
        self.log: list[tuple] = []

    def finished(self):
        return []

    def land_for_slot(self, cache):
        key = next(iter(self.in_flight))
        del self.in_flight[key]
        self.log.append(("land", key))
        return [key]

    def late(self, key):
        self.in_flight.pop(key, None)
        self.log.append(("late", key))

    def demand(self, layer, misses):
        self.log.append(("demand", tuple(key for key, _ in misses)))

    def prefetch(self, key, slot):
        self.log.append(("prefetch", key))
        if self.keep_in_flight:
            self.in_flight[key] = slot
        return self.keep_in_flight


def test_requests_are_ascending_and_a_miss_never_evicts_an_expert_the_layer_needs():
    policy = RecordingLRU()
    cache = ExpertCache(3, policy)
    driver = CacheDriver([cache, cache])
    transport = FakeTransport(keep_in_flight=False)
    driver.start_pass()
    driver.run_layer(0, [K(0, 1), K(0, 2), K(0, 3)], transport)  # fills the cache; (0, 1) is the LRU one
    policy.accessed.clear()
    driver.run_layer(1, [K(1, 0), K(1, 9)], transport)  # two misses: evict (0, 1) then (0, 2)
    driver.start_pass()
    policy.accessed.clear()
    driver.run_layer(0, [K(0, 0), K(0, 3)], transport)  # (0, 3) resident, (0, 0) a miss: must not evict (0, 3)
    assert policy.accessed == [K(0, 0), K(0, 3)]  # ascending ids, whatever is resident
    assert K(0, 3) not in policy.evicted and K(0, 3) in cache
    assert transport.log[-1] == ("demand", (K(0, 0),))  # the misses' copies, issued together


def test_a_full_cache_lands_a_copy_through_the_transport_and_a_demanded_copy_in_flight_is_late():
    cache = ExpertCache(2, make_eviction("lru"))
    driver = CacheDriver([cache, cache], prefetch_budget=None)
    transport = FakeTransport(keep_in_flight=True)
    driver.start_pass()
    driver.run_layer(0, [K(0, 0)], transport, propose=lambda: ([(K(1, 5), 0.9)], None))
    assert transport.in_flight == {K(1, 5): 1} and cache.is_in_flight(K(1, 5))
    driver.run_layer(1, [K(1, 5)], transport)
    assert ("late", K(1, 5)) in transport.log and cache.stats.late_prefetches == 1
    driver.run_layer(1, [K(1, 5)], transport, propose=lambda: ([(K(0, 7), 0.9)], None))  # (0, 0) makes room
    driver.start_pass()
    # (1, 5) pinned by this group and (0, 7) still in flight: the second miss has to land (0, 7) first
    driver.run_layer(0, [K(0, 3), K(0, 4)], transport)
    assert ("land", K(0, 7)) in transport.log and not cache.is_in_flight(K(0, 7))
    assert cache.stats.prefetches_issued == 2


def test_the_prefetch_budget_counts_copies_per_predicted_layer_and_residents_cost_nothing():
    cache = ExpertCache(16, make_eviction("lru"))
    driver = CacheDriver([cache] * 3, prefetch_budget=1)
    transport = FakeTransport(keep_in_flight=False)
    driver.start_pass()
    driver.run_layer(1, [K(1, 0)], transport)
    candidates = [(K(1, 0), 0.9), (K(1, 1), 0.8), (K(2, 4), 0.7), (K(1, 2), 0.6), (K(2, 5), 0.5), (K(3, 1), 0.4)]
    driver.run_layer(0, [K(0, 0)], transport, propose=lambda: (candidates, {}))
    copied = [key for kind, key in transport.log if kind == "prefetch"]
    assert copied == [K(1, 1), K(2, 4)]  # two predicted layers: budget 2; (1, 0) is resident; layer 3 is past L
    assert driver.prefetches_over_budget == 2 and cache.stats.prefetches_issued == 2


def test_a_prefetch_takes_only_what_fits_beside_the_pinned_group_and_the_budget_counts_before_that_cut():
    cache = ExpertCache(6, make_eviction("lru"))
    driver = CacheDriver([cache] * 4, prefetch_budget=2)
    transport = FakeTransport(keep_in_flight=False)
    driver.start_pass()
    driver.run_layer(1, [K(1, 0)], transport)
    # layer 0 pins 2 of the 6 slots: room for 4 candidates, the resident (1, 0) among them; three predicted layers
    # give a budget of 6 copies, so the room is what stops the call, nearest layer first
    candidates = [(K(1, e), 0.9) for e in range(4)] + [(K(2, e), 0.8) for e in range(3)] + [(K(3, 0), 0.7)]
    driver.run_layer(0, [K(0, 0), K(0, 1)], transport, propose=lambda: (candidates, {}))
    copied = [key for kind, key in transport.log if kind == "prefetch"]
    assert copied == [K(1, 1), K(1, 2), K(1, 3)]
    assert cache.stats.prefetches_wasted == 0 and driver.prefetches_over_budget == 0
    # a pass's start pins nothing: the whole cache is room, and the budget stops the call at 2 x 1 layer
    driver.start_pass()
    driver.prefetch(0, [(K(0, e), 0.5) for e in range(2, 6)], None, transport=transport)
    assert [key for kind, key in transport.log if kind == "prefetch"][3:] == [K(0, 2), K(0, 3)]
    # one cache per layer: a prefetch into another layer's cache competes with no pinned group, nothing is cut
    caches = [ExpertCache(2, make_eviction("lru")) for _ in range(2)]
    per_layer = CacheDriver(caches, prefetch_budget=None)
    per_layer.start_pass()
    per_layer.run_layer(0, [K(0, 0), K(0, 1)], transport, propose=lambda: ([(K(1, 0), 0.9), (K(1, 1), 0.8)], {}))
    assert caches[1].stats.prefetches_issued == 2


def test_capacity_to_slots():
    assert resolve_capacity(0.25, 10, 1000) == (25, 250, 0.25)
    assert resolve_capacity(995, 10, 1000)[0] == 99
    assert resolve_capacity(5000, 10, 1000)[0] == 100  # never more slots than experts
    for bad, message in [(0.0, "in \\(0, 1\\]"), (1.5, "in \\(0, 1\\]"), (0, "int > 0"), (5, "below one expert")]:
        with pytest.raises(ValueError, match=message):
            resolve_capacity(bad, 10, 1000)


class HearingLRU(LRU):
    """An LRU that records the resident candidates a prefetch told it about."""

    name = "hearing-lru"

    def __init__(self):
        super().__init__()
        del self.on_prefetch  # LRU's, bound on the instance: the class's below answers instead
        self.heard: list[K] = []

    def on_prefetch(self, key: K) -> None:
        self.heard.append(key)


class DeafLRU(LRU):
    """Keeps EvictionPolicy's no-op on_prefetch (unlike LRU, which binds one on the instance)."""

    name = "deaf"

    def __init__(self):
        super().__init__()
        del self.on_prefetch


@pytest.mark.parametrize("policy_class", [HearingLRU, LRU, DeafLRU])
def test_resident_candidates_reach_only_a_policy_that_hears_prefetches(policy_class, monkeypatch):
    policy = policy_class()
    cache = ExpertCache(4, policy)
    driver = CacheDriver([cache, cache], prefetch_budget=1)
    transport = FakeTransport(keep_in_flight=False)
    driver.start_pass()
    driver.run_layer(1, [K(1, 0), K(1, 1)], transport)
    told: list[K] = []
    prefetch = cache.prefetch
    monkeypatch.setattr(cache, "prefetch", lambda key, score=1.0: told.append(key) or prefetch(key, score))
    candidates = [(K(1, 1), 0.9), (K(1, 0), 0.8), (K(1, 5), 0.7), (K(1, 6), 0.6)]
    driver.prefetch(0, candidates, None, transport=transport)
    hears = policy_class is not DeafLRU
    assert told == ([K(1, 1), K(1, 0), K(1, 5)] if hears else [K(1, 5)])  # (1, 6): over the budget of 1 layer
    if policy_class is HearingLRU:
        assert policy.heard == [K(1, 1), K(1, 0)]
    if policy_class is LRU:  # its bound on_prefetch refreshed both: (1, 5) went in after them
        assert list(policy._order)[-3:] == [K(1, 1), K(1, 0), K(1, 5)]
    assert transport.log[-1] == ("prefetch", K(1, 5)) and driver.prefetches_over_budget == 1
