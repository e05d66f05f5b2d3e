"""The shared indexed heap's id-level routes (runtime/policies/id_heap.py): score hearing a layer's routing by id
inside the cache's group call, and Belady numbering its future in the heap, against the key paths they replace.

    pytest tests/runtime/test_id_heap.py

Score's routing by id must leave every rank, tie order and pending sum exactly as `predictions(dict.fromkeys(keys,
1.0))` before the group does (compared float for float), so the victims cannot differ either.
"""

from __future__ import annotations

import random

import pytest

from eval.simulate import ReplayClock
from eval.trace import Trace
from runtime.driver import CacheDriver
from runtime.expert_cache import ExpertCache
from runtime.policies import make_eviction
from runtime.policies.score import ScoreBased
from specmd_predict.routing import ExpertKey as K

NUM_LAYERS, NUM_EXPERTS = 4, 16


class ScoreByDict(ScoreBased):
    """Score on the same batched id path, but hearing the routing as a dict of predictions (it does not declare
    `routes_ids` itself)."""

    batched = True
    batched_ids = True


def state(policy: ScoreBased) -> tuple:
    """Every key's score, the order of the residents' ties, and the scores waiting for an id."""
    heap, keys = policy._heap, policy._keys
    ranks = {keys[n]: heap.rank_of(n) for n in range(1, len(keys))}
    ties = sorted((n for n in range(1, len(keys)) if n in heap), key=lambda n: heap.tie_of(n))
    return ranks, [keys[n] for n in ties], dict(policy._pending)


def drive(policy, seed: int, slots: int, cache_hook=None) -> list:
    """Random passes through the real driver, with random predictions (some for keys never requested yet) between
    layers; the residents and the policy's state after every layer."""
    rng = random.Random(seed)
    cache = ExpertCache(slots, policy, num_layers=NUM_LAYERS)
    driver = CacheDriver([cache] * NUM_LAYERS)
    clock = ReplayClock([cache] * NUM_LAYERS, None)
    seen = []
    for _ in range(60):
        driver.start_pass()
        for layer in range(NUM_LAYERS):
            if rng.random() < 0.6:  # often for keys with no id yet: their scores wait in `_pending`
                predicted = [K(rng.randrange(NUM_LAYERS), rng.randrange(NUM_EXPERTS)) for _ in range(2)]
                cache.predictions({key: rng.random() for key in predicted})
            width = rng.choice([1, 2, 3, slots + 1]) if rng.random() < 0.9 else 0  # wider than the cache: groups
            keys = tuple(K(layer, e) for e in sorted(rng.sample(range(NUM_EXPERTS), min(width, NUM_EXPERTS))))
            driver.run_layer(layer, keys, clock)
            seen.append((dict(cache.slots), state(policy)))
    return seen


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("slots", [3, 6])
def test_score_hears_the_routing_by_id_exactly_as_by_dict(seed, slots):
    by_id, by_dict = ScoreBased(), ScoreByDict()
    first = drive(by_id, seed, slots)
    assert first == drive(by_dict, seed, slots)
    assert ExpertCache(4, by_id).routes_ids and not ExpertCache(4, by_dict).routes_ids
    assert any(pending for _, (_, _, pending) in first)  # predictions for keys without an id did occur


def test_an_announced_routing_is_heard_first_whatever_comes_next():
    keys = (K(0, 1), K(0, 2))
    for then in ("request", "other_group", "pinned_group", "predictions", "start_layer"):
        policies = [ScoreBased(), ScoreByDict()]
        for policy in policies:
            cache = ExpertCache(4, policy, num_layers=1)
            cache.start_pass()
            cache.start_layer(0)
            cache.request_group((K(0, 1), K(0, 3)), False)  # K(0, 1) has an id and is resident; K(0, 2) has neither
            cache.hear_routing(keys)
            if then == "request":
                cache.request(K(0, 2))
            elif then == "other_group":
                cache.request_group((K(0, 2),), False)
            elif then == "pinned_group":
                cache.pin(K(0, 1))
                assert cache.request_group(keys) is None  # nothing done: the routing is heard all the same
                cache.unpin_all()
            elif then == "predictions":
                cache.predictions({K(0, 2): 0.5})
            else:
                cache.start_layer(0)
        by_id, by_dict = (state(p) for p in policies)
        assert by_id == by_dict, then
        assert by_id[0][K(0, 1)] == 2.0, then  # its use (1) and the routing (1), heard once


def test_belady_numbers_its_future_in_the_heap_and_names_a_wrong_request():
    future = [K(0, 1), K(1, 2), K(0, 1), K(1, 3)]
    policy = make_eviction("belady", future=iter(future))  # any iterable
    assert list(policy._heap.future_ids) == [policy._ids[k] for k in future]
    assert [policy._heap.following(i) for i in range(4)] == [2, float("inf"), float("inf"), float("inf")]
    cache = ExpertCache(2, policy, num_layers=2)
    cache.start_pass()
    cache.start_layer(0)
    cache.request(K(0, 1))
    with pytest.raises(ValueError, match=r"request 1 is ExpertKey\(layer=1, expert=3\).*has ExpertKey\(layer=1, "):
        cache.request(K(1, 3))
    other = make_eviction("belady", future=future)
    group = ExpertCache(2, other, num_layers=2)
    group.start_pass()
    group.start_layer(0)
    with pytest.raises(ValueError, match=r"request 0 is ExpertKey\(layer=0, expert=2\)"):
        group.request_group((K(0, 2),), False)


@pytest.mark.parametrize("slots", [3, 6])
def test_score_hears_the_routing_by_id_on_the_simulators_pass_loop(slots):
    # CacheDriver.run_pass asks the books by the trace's key numbers (ExpertCache.request_ids, routing included)
    rng = random.Random(slots)
    widths = [1, 2, 3, slots + 1]  # wider than the cache: groups, by key
    passes = [[rng.sample(range(NUM_EXPERTS), rng.choice(widths)) for _ in range(NUM_LAYERS)] for _ in range(50)]
    passes[3][1] = []  # a layer that routes nothing
    trace = Trace.from_passes(passes, num_experts=NUM_EXPERTS, top_k=3)
    seen = []
    for policy, by_numbers in ((ScoreBased(), True), (ScoreByDict(), False)):
        cache = ExpertCache(slots, policy, num_layers=NUM_LAYERS)
        driver, clock = CacheDriver([cache] * NUM_LAYERS), ReplayClock([cache] * NUM_LAYERS, None)
        states = []
        for p, layers in enumerate(trace.requests()):
            driver.start_pass()
            if by_numbers:
                driver.run_pass(layers, clock, trace.request_ids(), p * NUM_LAYERS)
            else:
                for layer, keys in enumerate(layers):
                    driver.run_layer(layer, keys, clock)
            states.append((dict(cache.slots), state(policy)))
        seen.append((states, cache.stats.as_dict()))
    assert seen[0] == seen[1]
