"""Each eviction policy on a tiny hand-checked trace (exact misses, libCacheSim style), the registry, prefetchers.

    pytest tests/runtime/test_policies.py

The hand trace has L = 2 MoE layers, one expert requested per layer per pass, a 2-slot cache:
    pass 0: a c | pass 1: a d | pass 2: b c | pass 3: a c     with a=(0,0) b=(0,1) c=(1,0) d=(1,1)
The expected numbers were worked out by hand (see each comment) before running the code.
"""

from __future__ import annotations

import random

import pytest
import torch

from runtime.expert_cache import ExpertCache
from runtime.policies import EVICTION_POLICIES, PREFETCH_POLICIES, make_eviction, make_prefetch
from specmd_predict.routing import ExpertKey as K
from specmd_predict.routing import Routing

A, B, C, D = K(0, 0), K(0, 1), K(1, 0), K(1, 1)
HAND_PASSES = [[[A], [C]], [[A], [D]], [[B], [C]], [[A], [C]]]


def flat(passes):
    return [key for layers in passes for keys in layers for key in keys]


def replay(policy, passes, num_slots, predictions=None):
    """Drive an ExpertCache through passes (list of per-layer key lists); predictions[(p, l)] are forwarded."""
    cache = ExpertCache(num_slots, policy)
    for layers in passes:
        p = cache.start_pass()
        for layer, keys in enumerate(layers):
            cache.start_layer(layer)
            if predictions and (p, layer) in predictions:
                cache.predictions(predictions[(p, layer)])
            for key in keys:
                cache.request(key)
    return cache.stats


@pytest.mark.parametrize(
    "name, misses, collisions",
    [
        # a c hit(a) d:evict c | b:evict a, c:evict d | a:evict b, hit(c)
        ("lru", 6, 0),
        # insertion order a c; d evicts a; b evicts c; c evicts d (c left in this pass: collision); a evicts b
        ("fifo", 6, 1),
        # counts a2 c1 -> d evicts c; b evicts d(1); c evicts b(1); a, c hit
        ("lfu", 5, 0),
        # scores survive eviction: same victims as LFU here
        ("score", 5, 0),
        # distance (j - l) mod 2: d evicts a; b evicts c (tie, older); c evicts b -> collision; a evicts d; c hits
        ("fld", 6, 1),
        # stale first, earliest layer: d evicts c; b evicts a; c evicts d; a evicts b; c hits
        ("least-stale-layer-order", 6, 0),
        # stale first, layer behind first: d evicts c; b evicts d; c evicts a; a evicts c; c evicts b (collision)
        ("least-stale-reverse", 7, 1),
        # farthest predicted next use (j - l) + L (1/f - 1), f a per-pass EMA (no stale/current split; the
        # calibration keeps slope 1 on so few reuses): d evicts c (t 47.3 vs a's 23.1); b evicts d (used once,
        # t 48.3 vs a's 23.2); c evicts b (used once, t 46.2 vs a's 24.2); a and c hit
        ("least-stale-predicted", 5, 0),
    ],
)
def test_exact_misses_on_hand_trace(name, misses, collisions):
    stats = replay(make_eviction(name, num_layers=2), HAND_PASSES, num_slots=2)
    assert (stats.misses, stats.collision_misses) == (misses, collisions)
    assert stats.hits == 8 - misses


def test_belady_on_hand_trace():
    # a c hit(a); d evicts a (next 6 vs c's 5); b evicts d (never); c hits; a evicts b (never); c hits
    stats = replay(make_eviction("belady", future=flat(HAND_PASSES)), HAND_PASSES, num_slots=2)
    assert (stats.hits, stats.misses) == (3, 5)


def test_belady_ranks_a_prefetched_insert_by_its_next_request():
    # future a c d a; after a c d the cache holds a d (c evicted: never again). At request 3 (a, not yet made) a
    # prefetch of c (never requested again) and of b (never) meet residents a (next 3) and d (never): the prefetched
    # inserts rank by their next request from now, so the victim for b is a never-again key, never a
    policy = make_eviction("belady", future=[A, C, D, A])
    cache = ExpertCache(2, policy)
    cache.start_pass()
    for key in (A, C, D):
        cache.request(key)
    assert set(cache.resident()) == {A, D}
    assert cache.prefetch(C) is not None and set(cache.resident()) == {A, C}  # d (never) went, not a (next: 3)
    cache.complete(C)
    assert cache.prefetch(B) is not None and set(cache.resident()) == {A, B}  # c (never) went, not a
    cache.complete(B)
    assert cache.request(A).status == "hit"


def test_least_stale_predicted_uses_predictions():
    # pass 1, layer 0: a and c resident and stale, b requested. Without predictions the victim is the one
    # with the farther frequency estimate; a high probability for (1, 0) this pass protects c.
    passes = [[[A], [C]], [[B], [C]]]
    stats = replay(make_eviction("least-stale-predicted", num_layers=2), passes, 2, {(1, 0): {C: 0.9}})
    assert (stats.misses, stats.hits) == (3, 1)  # b evicted a, c hit
    stats = replay(make_eviction("least-stale-predicted", num_layers=2), passes, 2, {(1, 0): {A: 0.9}})
    assert stats.misses == 4  # a predicted at this layer (t = 0); c has no prediction (t = 1 + L (1/f - 1)), goes


def test_score_uses_predictions():
    # 2 slots, a and c resident with one use each; a prediction raises a's score, so b evicts c (not LRU's a)
    cache = ExpertCache(2, make_eviction("score"))
    cache.start_pass()
    cache.start_layer(0)
    cache.request(A)
    cache.start_layer(1)
    cache.request(C)
    cache.predictions({A: 0.7})
    cache.start_layer(0)
    cache.request(B)
    assert set(cache.resident()) == {A, B}


def cyclic_passes(num_layers=4, experts=(0, 1), num_passes=12):
    return [[[K(layer, e) for e in experts] for layer in range(num_layers)] for _ in range(num_passes)]


def test_least_stale_has_fewer_collisions_than_lru_on_cyclic_layers():
    passes = cyclic_passes()
    lru = replay(make_eviction("lru"), passes, num_slots=6)
    least = replay(make_eviction("least-stale", num_layers=4), passes, num_slots=6)
    belady = replay(make_eviction("belady", future=flat(passes)), passes, num_slots=6)
    assert lru.collision_misses > 0
    assert least.collision_misses < lru.collision_misses
    assert belady.misses <= least.misses < lru.misses


def random_passes(rng, num_passes, num_layers, num_experts, k, skew):
    weights = [1.0 / (e + 1) ** skew for e in range(num_experts)]

    def layer_keys(layer):
        return [K(layer, e) for e in sorted(set(rng.choices(range(num_experts), weights, k=k)))]

    return [[layer_keys(layer) for layer in range(num_layers)] for _ in range(num_passes)]


@pytest.mark.parametrize("seed", range(4))
def test_belady_is_a_lower_bound(seed):
    rng = random.Random(seed)
    passes = random_passes(rng, 60, num_layers=4, num_experts=8, k=2, skew=1.0 + seed / 2)
    for num_slots in (2, 5, 9, 17):
        best = replay(make_eviction("belady", future=flat(passes)), passes, num_slots).misses
        for name in EVICTION_POLICIES:
            if name != "belady":
                assert best <= replay(make_eviction(name, num_layers=4), passes, num_slots).misses, name


def test_registry_errors():
    with pytest.raises(ValueError, match="Did you mean 'least-stale'"):
        make_eviction("least-stail")
    with pytest.raises(ValueError, match="Known: .*router-reuse"):
        make_prefetch("no-such-prefetcher")
    with pytest.raises(ValueError, match="oracle"):
        make_eviction("belady")
    assert make_eviction("lru", num_layers=3, future=[]).name == "lru"  # context kwargs it does not take


def test_unknown_option_is_an_error_with_did_you_mean():
    with pytest.raises(ValueError, match="unknown option 'treshold'. Did you mean 'threshold'"):
        make_eviction("least-stale-predicted", treshold=0.9)
    with pytest.raises(ValueError, match="'lru' got an unknown option 'bogus'"):
        make_eviction("lru", bogus=1)
    with pytest.raises(ValueError, match="unknown option 'overfech'. Did you mean 'overfetch'"):
        make_prefetch("router-reuse", predictor=FakePredictor(4, PROBS), overfech=2.0)
    # context keywords and other policies' options (one grid-wide dict, as specmd-eval passes) are dropped
    policy = make_eviction("least-stale-predicted", num_layers=4, num_experts=8, top_k=2, future=[], access_score=2)
    assert (policy.num_layers, policy.threshold) == (4, 0.5)
    pre = make_prefetch(
        "router-reuse",
        predictor=FakePredictor(4, PROBS),
        top_k=2,
        num_layers=4,
        percentile=50.0,
        horizon=3,
        adapter=None,
    )
    assert pre.top_k == 2 and pre.horizon == 1


@pytest.mark.parametrize(
    "kind, name, option, value",
    [
        ("eviction", "least-stale-predicted", "threshold", 1.5),
        ("eviction", "least-stale-predicted", "threshold", -0.1),
        ("eviction", "least-stale-predicted", "half_life", 0),
        ("eviction", "least-stale-predicted", "min_frequency", 0.0),
        ("eviction", "least-stale-predicted", "num_layers", 0),
        ("eviction", "score", "access_score", float("nan")),
        ("eviction", "fld", "num_layers", 2.5),
        ("prefetch", "predictor", "top_k", 0),
        ("prefetch", "predictor", "threshold", True),
        ("prefetch", "router-reuse", "overfetch", -1.0),
        ("prefetch", "score-percentile", "percentile", 100.0),
    ],
)
def test_numeric_options_are_range_checked(kind, name, option, value):
    make = make_eviction if kind == "eviction" else make_prefetch
    extra = {"predictor": FakePredictor(4, PROBS)} if kind == "prefetch" else {}
    with pytest.raises(ValueError, match=f"{kind} policy '{name}': {option} must be"):
        make(name, **extra, **{option: value})


def test_least_stale_base_is_abstract():
    from runtime.policies.least_stale import _LeastStale

    with pytest.raises(TypeError, match="abstract"):
        _LeastStale(num_layers=2)


class FakePredictor:
    """Fixed probabilities: layer l+h+1's experts get probs[h] for every token."""

    def __init__(self, num_layers, probs_HE):
        self.num_layers, self.probs_HE = num_layers, torch.tensor(probs_HE)

    def predict(self, layer, hidden_TD):
        h_eff = min(len(self.probs_HE), self.num_layers - 1 - layer)
        return self.probs_HE[:h_eff].unsqueeze(0).expand(hidden_TD.shape[0], -1, -1)


ROUTING = Routing(torch.tensor([[0, 1]]), torch.tensor([[0.5, 0.5]]))
HIDDEN = torch.zeros(1, 4)
PROBS = [[0.9, 0.1, 0.6, 0.05, 0.3], [0.2, 0.8, 0.1, 0.7, 0.05]]


def test_prefetch_none_and_router_reuse():
    assert make_prefetch("none").propose(0, HIDDEN, ROUTING) == []
    pre = make_prefetch("router-reuse", predictor=FakePredictor(4, PROBS), top_k=2, overfetch=1.5)
    keys = [key for key, _ in pre.propose(0, HIDDEN, ROUTING)]
    assert keys == [K(1, 0), K(1, 2), K(1, 4)]  # top round(2 * 1.5) = 3 of layer 1, best first
    assert pre.probabilities[K(1, 1)] == pytest.approx(0.1)
    assert pre.propose(0, None, ROUTING) == []  # no hidden state kept: nothing to predict from
    assert pre.propose(3, HIDDEN, ROUTING) == []  # last layer: nothing ahead


def test_prefetch_score_percentile_and_predictor():
    pre = make_prefetch("score-percentile", predictor=FakePredictor(4, PROBS), percentile=60)
    assert [key for key, _ in pre.propose(0, HIDDEN, ROUTING)] == [K(1, 0), K(1, 2)]  # above the 60th pct (0.3)
    two_tokens = torch.zeros(2, 4)
    pre = make_prefetch("predictor", predictor=FakePredictor(4, PROBS), horizon=2, threshold=0.65)
    out = pre.propose(1, two_tokens, ROUTING)
    # any of 2 tokens: 1 - (1 - p)^2 -> layer 2: 0.99, 0.19, 0.84, ...; layer 3: 0.36, 0.96, 0.19, 0.91
    assert [key for key, _ in out] == [K(2, 0), K(2, 2), K(3, 1), K(3, 3)]
    assert out[0][1] == pytest.approx(0.99)
    pre = make_prefetch("predictor", predictor=FakePredictor(4, PROBS), horizon=2, top_k=1)
    assert [key for key, _ in pre.propose(2, HIDDEN, ROUTING)] == [K(3, 0)]  # H_eff = 1 at layer 2
    with pytest.raises(ValueError, match="exactly one of top_k"):
        make_prefetch("predictor", predictor=FakePredictor(4, PROBS))
    with pytest.raises(ValueError, match="needs predictor"):
        make_prefetch("router-reuse")
    assert set(PREFETCH_POLICIES) == {"none", "router-reuse", "score-percentile", "predictor"}
