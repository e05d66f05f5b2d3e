"""benchmarks/simulator.py runs at tiny size: both paths (simulate() through the driver, the bare request loop)
for every policy, each simulate() row saying whether its core ran compiled, the request loop's hits equal
libCacheSim's on the same stream, and the pure-Python floor's equal simulate()'s LRU.

pytest tests/eval/test_simulator_benchmark.py
"""

from __future__ import annotations

import json

import pytest

from runtime.policies import EVICTION_POLICIES
from tests.project_scripts import load_script


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
    for name in EVICTION_POLICIES:  # the tree's build decides; an unbuilt tree (a worktree) runs interpreted
        assert rows[("specmd simulate() (driver)", name)]["core"] in ("compiled", "books compiled", "interpreted")
    for name in ("lru", "fifo", "belady"):
        assert rows[("specmd request loop", name)]["hits"] == rows[("libCacheSim 0.3.5 (C loop)", name)]["hits"]
