"""Trace building and replay (eval/trace.py, eval/simulate.py): passes, exact counts, Belady bound, errors.

pytest tests/eval/test_simulate.py
"""

from __future__ import annotations

import numpy as np
import pytest

from eval.hardware import get_profile, get_shape
from eval.simulate import resolve_capacity, simulate
from eval.trace import Trace
from runtime.policies import EVICTION_POLICIES
from specmd_predict.routing import ExpertKey as K


def test_passes_from_arrays():
    # sequence 7: 3 prompt tokens then 2 decode tokens; sequence 9: 1 prompt token, 1 decode token; L=2, K=1
    ids = np.array([[[0], [1]], [[2], [1]], [[0], [3]], [[1], [1]], [[2], [2]], [[3], [0]], [[3], [1]]])
    trace = Trace.from_arrays(ids, [7, 7, 7, 7, 7, 9, 9], [1, 1, 1, 0, 0, 1, 0], num_experts=4)
    assert trace.pass_bounds == [(0, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    assert trace.pass_is_prefill == [True, False, False, True, False]
    req = trace.requests()
    assert req[0] == [(K(0, 0), K(0, 2)), (K(1, 1), K(1, 3))]  # union of the prompt's experts per layer
    assert req[1] == [(K(0, 1),), (K(1, 1),)]
    assert trace.flat_requests()[:4] == [K(0, 0), K(0, 2), K(1, 1), K(1, 3)]
    assert trace.routing(0, 1).expert_ids_TK.tolist() == [[1], [1], [3]]
    with pytest.raises(ValueError, match="not contiguous"):
        Trace.from_arrays(ids[:3], [1, 2, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="expert ids must be in"):
        Trace.from_arrays(ids, [0] * 7, [1] * 7, num_experts=2)


def test_exact_counts_on_hand_trace():
    # 2 layers x 2 experts, 2 slots; pass 0: {0,1} {0}; pass 1: {0} {1}. Layer 0 of pass 0 pins both slots,
    # then (1,0) evicts LRU (0,0); pass 1: (0,0) misses evicting (0,1); (1,1) evicts (1,0): 5 misses, 0 hits
    trace = Trace.from_passes([[[0, 1], [0]], [[0], [1]]], num_experts=2)
    result = simulate(trace, "lru", capacity=2, expert_bytes=1)
    assert (result.stats.misses, result.stats.hits, result.stats.collision_misses) == (5, 0, 0)
    assert result.num_slots == 2 and result.capacity_fraction == 0.5
    # Belady: (1,0) evicts (0,1) (never used again) -> (0,0) hits in pass 1
    result = simulate(trace, "belady", capacity=2, expert_bytes=1)
    assert (result.stats.misses, result.stats.hits) == (4, 1)


def test_prefill_wider_than_the_cache_is_processed_in_groups():
    trace = Trace.from_passes([[[0, 1, 2, 3, 4]], [[4]]], num_experts=5)
    result = simulate(trace, "lru", capacity=2, expert_bytes=1)
    assert (result.stats.misses, result.stats.hits) == (5, 1)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("layout", ["global", "per-layer"])
def test_belady_hit_rate_is_an_upper_bound(seed, layout):
    trace = Trace.synthetic(
        num_sequences=3,
        prompt_tokens=6,
        decode_tokens=25,
        num_layers=4,
        num_experts=16,
        top_k=2,
        skew=0.8 + 0.4 * seed,
        seed=seed,
    )
    for capacity in (0.125, 0.25, 0.5):
        best = simulate(trace, "belady", capacity=capacity, layout=layout).stats.hit_rate
        for name in EVICTION_POLICIES:
            rate = simulate(trace, name, capacity=capacity, layout=layout).stats.hit_rate
            assert rate <= best + 1e-12, (name, capacity)


def test_least_stale_fewer_collisions_than_lru_on_cyclic_layers():
    passes = [[[0, 1] for _ in range(4)] for _ in range(10)]  # every pass: experts 0, 1 at each of 4 layers
    trace = Trace.from_passes(passes, num_experts=2)
    lru = simulate(trace, "lru", capacity=6, expert_bytes=1).stats
    least = simulate(trace, "least-stale", capacity=6, expert_bytes=1).stats
    assert least.collision_misses < lru.collision_misses
    assert least.misses < lru.misses


def test_bad_capacity_and_names():
    trace = Trace.synthetic(num_sequences=1, prompt_tokens=2, decode_tokens=2, num_layers=4, num_experts=8, top_k=2)
    with pytest.raises(ValueError, match="below one expert"):
        simulate(trace, "lru", capacity=10, expert_bytes=100)
    with pytest.raises(ValueError, match="below one layer's needs"):
        simulate(trace, "lru", capacity=1, expert_bytes=1)
    with pytest.raises(ValueError, match="per-layer caches 1 expert slots"):
        simulate(trace, "lru", capacity=0.125, layout="per-layer")
    with pytest.raises(ValueError, match="fraction"):
        resolve_capacity(1.5, 1, 10)
    with pytest.raises(ValueError, match="Did you mean 'fifo'"):
        simulate(trace, "fifi", capacity=0.5)
    with pytest.raises(ValueError, match="layout"):
        simulate(trace, "lru", capacity=0.5, layout="sharded")


class NextLayerOracle:
    """Reads the next layer's experts out of the hidden state the test packed them into."""

    def __init__(self, num_experts, num_layers=4):
        self.num_experts, self.num_layers = num_experts, num_layers

    def predict(self, layer, hidden_TD):
        h_eff = 1 if layer < self.num_layers - 1 else 0
        return hidden_TD[:, None, : self.num_experts][:, :h_eff]


def oracle_trace(num_layers=4, num_experts=8):
    base = Trace.synthetic(
        num_sequences=2,
        prompt_tokens=4,
        decode_tokens=20,
        num_layers=num_layers,
        num_experts=num_experts,
        top_k=2,
        seed=3,
    )
    ids = base.expert_ids_NLK
    hidden = np.zeros((ids.shape[0], num_layers, num_experts), dtype=np.float32)
    for layer in range(num_layers - 1):
        np.put_along_axis(hidden[:, layer], ids[:, layer + 1], 1.0, axis=1)
    seq = np.repeat([0, 1], 24)
    prompt = np.tile(np.arange(24) < 4, 2)
    return Trace.from_arrays(ids, seq, prompt, num_experts, hidden_NLD=hidden)


def test_prefetch_with_and_without_timing():
    trace = oracle_trace()
    base = simulate(trace, "lru", capacity=0.5)
    pre = simulate(trace, "lru", "predictor", capacity=0.5, predictor=NextLayerOracle(8), prefetch_kwargs={"top_k": 2})
    assert pre.stats.misses < base.stats.misses
    assert pre.stats.prefetch_precision == 1.0 and pre.stats.late_prefetches == 0
    memo = {}
    for _ in range(2):  # memoized proposals (filled, then reused) replay the same
        again = simulate(
            trace,
            "lru",
            "predictor",
            capacity=0.5,
            predictor=NextLayerOracle(8),
            prefetch_kwargs={"top_k": 2},
            proposals=memo,
        )
        assert again.row() == pre.row()
    assert len(memo) == trace.num_passes * trace.num_layers
    timed, fast = (
        simulate(
            trace,
            "lru",
            "router-reuse",
            capacity=0.5,
            predictor=NextLayerOracle(8),
            hardware=get_profile(link),
            shape=get_shape("mixtral-8x7b"),
        )
        for link in ("pcie4-x16", "gh200-c2c")
    )
    # a Mixtral expert (~352 MB) takes ~14 ms over PCIe 4 while a decode layer computes in < 1 ms: late
    assert timed.stats.late_prefetches > 0
    assert timed.timing["ttft_s"] > timed.timing["tpot_s"] > 0
    assert fast.timing["stall_s"] < timed.timing["stall_s"]
    assert set(fast.row()) >= {"hit_rate", "collision_misses", "late_prefetches", "prefetch_recall", "bytes_moved"}


@pytest.mark.parametrize("capacity", [0.25, 0.375, 0.5])
def test_least_stale_predicted_uses_exact_predictions_to_beat_lru(capacity):
    """With exact next-layer predictions our evictor misses no more than LRU (less from 37.5% up) and never
    more than Least-Stale without them. At 25% it ties LRU or beats it: the cache driver pins a layer's resident
    experts before its requests, which spares LRU the same-layer evictions that the current routing spares
    least-stale-predicted. Belady (same prefetches) orders by the next demand only, which is no bound once experts
    come back by prefetch: evicting one the prefetcher will bring back in time costs nothing, and our evictor can
    miss less (47 / 20 / 14 against Belady's 49 / 27 / 21 here); the check keeps it within a few misses of it."""
    trace = oracle_trace()

    def misses(eviction):
        result = simulate(
            trace,
            eviction,
            "predictor",
            capacity=capacity,
            predictor=NextLayerOracle(8),
            prefetch_kwargs={"threshold": 0.5},
        )
        assert result.stats.requests == len(trace.flat_requests())
        return result.stats.misses

    ours = misses("least-stale-predicted")
    assert ours <= misses("lru")
    assert ours <= misses("belady") + 4
    if capacity > 0.25:
        assert ours < misses("lru")
    assert ours <= misses("least-stale")


def test_from_harvest_reads_the_contract_columns():
    datasets = pytest.importorskip("datasets")
    rows = {
        "sequence_id": [1, 0, 0, 0],
        "position": [0, 1, 0, 2],
        "token_id": [5, 6, 7, 8],
        "is_prompt": [True, True, True, False],
        "expert_ids": [[[1, 2]], [[0, 3]], [[0, 1]], [[2, 3]]],
        "expert_weights": [[[0.5, 0.5]]] * 4,
        "hidden": [[[0.0, 1.0]]] * 4,
    }

    class FakeHarvest:
        dataset = datasets.Dataset.from_dict(rows)
        manifest = {"model": {"num_experts": 4, "expert_bytes": 64}, "hidden_layers": [0]}
        validation = dataset

    trace = Trace.from_harvest(FakeHarvest(), split="validation")
    assert trace.pass_bounds == [(0, 2), (2, 3), (3, 4)]  # sequence 0 (prompt 2 + 1 decode), then sequence 1
    assert trace.requests()[0] == [(K(0, 0), K(0, 1), K(0, 3))]
    assert trace.hidden(0, 0).shape == (2, 2)
    # each pass's input tokens in position order (router reuse of hash-routed layers reads them with the hidden)
    assert [trace.token_ids(p).tolist() for p in range(3)] == [[7, 6], [8], [5]]
    assert Trace.from_harvest(FakeHarvest(), with_hidden=False).token_ids(0) is None
    assert simulate(trace, "lru", capacity=0.5).capacity_bytes == 128
