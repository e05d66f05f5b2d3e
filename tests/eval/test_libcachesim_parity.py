"""Our ExpertCache counts the same misses as libCacheSim (the field's reference simulator) for LRU, FIFO and Belady.

    pytest tests/eval/test_libcachesim_parity.py

A small harvest of the embedded model is replayed as the benchmark streams it: every demand request of every
pass, layers 0 -> L-1, flattened to integer keys layer * E + expert (Trace.flat_keys). Both simulators see
unit-size objects and a cache of `slots` objects; ours is driven without pins or prefetch (libCacheSim has
neither), so equal miss counts mean the two implement the same three policies.
"""

from __future__ import annotations

import numpy as np
import pytest

from eval.trace import Trace
from runtime.expert_cache import ExpertCache
from runtime.policies import make_eviction

lcs = pytest.importorskip("libcachesim")  # in the dev extra; CI installs it


@pytest.fixture(scope="module")
def harvest_trace(tmp_path_factory) -> Trace:
    from data_pipelines import HarvestConfig, ensure_harvest, load_harvest

    root = tmp_path_factory.mktemp("lcs")
    path = ensure_harvest(
        HarvestConfig(
            max_tokens=2048,
            seq_len=64,
            prompt_tokens=16,
            hidden_layers=[],
            device="cpu",
            output_dir=str(root / "harvest"),
            progress=False,
        )
    )
    return Trace.from_harvest(load_harvest(path), split=None, with_hidden=False)


def our_misses(trace: Trace, policy: str, slots: int) -> int:
    cache = ExpertCache(
        slots,
        make_eviction(policy, num_layers=trace.num_layers, future=trace.flat_requests()),
        num_layers=trace.num_layers,
    )
    for layers in trace.requests():
        cache.start_pass()
        for layer, keys in enumerate(layers):
            cache.start_layer(layer)
            for key in keys:
                cache.request(key)
    return cache.stats.misses


def libcachesim_misses(keys_N: np.ndarray, policy: str, slots: int, path) -> int:
    """Misses of libCacheSim's policy over an oracleGeneral file of the stream (Belady reads next-access times)."""
    n = len(keys_N)
    next_access = np.full(n, -1, dtype=np.int64)
    last_seen: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        next_access[i] = last_seen.get(int(keys_N[i]), -1)
        last_seen[int(keys_N[i])] = i
    records = np.zeros(n, dtype=[("ts", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")])
    records["ts"], records["id"], records["size"], records["next"] = np.arange(n), keys_N, 1, next_access
    records.tofile(path)
    cache = {"lru": lcs.LRU, "fifo": lcs.FIFO, "belady": lcs.Belady}[policy](slots)
    miss_ratio, _ = cache.process_trace(lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE))
    return round(miss_ratio * n)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25])
def test_lru_fifo_belady_misses_equal_libcachesim(harvest_trace, fraction, tmp_path):
    trace = harvest_trace
    keys_N = trace.flat_keys()
    assert len(keys_N) == len(trace.flat_requests()) > 10_000
    assert keys_N.max() < trace.num_layers * trace.num_experts
    slots = int(fraction * trace.num_layers * trace.num_experts)
    misses = {}
    for policy in ("lru", "fifo", "belady"):
        ours = our_misses(trace, policy, slots)
        assert ours == libcachesim_misses(keys_N, policy, slots, tmp_path / f"{policy}.oracleGeneral"), policy
        misses[policy] = ours
    assert misses["belady"] < min(misses["lru"], misses["fifo"])  # the stream is not trivial for either
