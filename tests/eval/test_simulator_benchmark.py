"""benchmarks/simulator.py runs at tiny size: both paths (simulate() through the driver, the bare request loop)
for every policy, the request loop's hits equal libCacheSim's on the same stream, and the pure-Python floor's and
the typed core floor's (benchmarks/typed_core_floor.py) equal simulate()'s with the same policy (LRU, LFU).

pytest tests/eval/test_simulator_benchmark.py
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from eval.simulate import simulate
from eval.trace import Trace
from runtime.driver import resolve_capacity
from runtime.policies import EVICTION_POLICIES
from tests.project_scripts import load_script


@pytest.mark.parametrize("capacity", [0.15, 0.25])
@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_typed_core_floor_counts_what_simulate_counts(policy, capacity):
    pytest.importorskip("cython")  # the typed core's source is Cython's pure-Python mode (in the dev extra)
    trace = Trace.synthetic(num_sequences=3, decode_tokens=24)
    expected = simulate(trace, policy, "none", capacity).stats
    num_slots = resolve_capacity(capacity, 1, trace.num_layers * trace.num_experts)[0]
    benchmark = load_script("benchmarks/simulator.py")
    core = load_script("benchmarks/typed_core_floor.py")  # interpreted (the benchmark compiles a copy)
    _, _, counters = benchmark.typed_core(trace, num_slots, core, policy)
    assert expected.evictions > 0 and expected.collision_misses > 0  # the stream exercises both
    assert counters == {
        "hits": expected.hits,
        "misses": expected.misses,
        "collision_misses": expected.collision_misses,
        "evictions": expected.evictions,
    }


@pytest.mark.slow  # runs the whole benchmark (every policy, both paths, libCacheSim), at tiny size
def test_simulator_benchmark_measures_both_paths_beside_libcachesim(tmp_path):
    pytest.importorskip("libcachesim")  # in the dev extra; CI installs it
    output = tmp_path / "simulator.json"
    result = load_script("benchmarks/simulator.py").main(["--sequences", "1", "--repeat", "1", "--output", str(output)])
    assert json.loads(output.read_text()) == result
    rows = {(row["simulator"], row["policy"]): row for row in result["rows"]}
    for name in EVICTION_POLICIES:
        driver, loop = rows[("specmd simulate() (driver)", name)], rows[("specmd request loop", name)]
        assert driver["requests"] == loop["requests"] == result["num_requests"] > 0
        assert driver["rate"] > 0 and 0 < driver["hits"] < driver["requests"]
    lru_hits = rows[("specmd simulate() (driver)", "lru")]["hits"]
    for label in ("ExpertKey keys", "int keys"):  # the floor does LRU's work: the same hits as simulate()'s LRU
        assert rows[(f"pure-Python floor, {label}", "lru")]["hits"] == lru_hits
    typed = [row for (simulator, _), row in rows.items() if simulator.startswith("typed core floor")]
    for row in typed:  # interpreted, and compiled where Cython builds: the hits of simulate() with the same policy
        assert row["hits"] == rows[("specmd simulate() (driver)", row["policy"])]["hits"]
    if importlib.util.find_spec("cython") is not None:  # the benchmark skips the typed core without Cython
        assert typed
    for name in ("lru", "fifo", "belady"):
        assert rows[("specmd request loop", name)]["hits"] == rows[("libCacheSim 0.3.5 (C loop)", name)]["hits"]
