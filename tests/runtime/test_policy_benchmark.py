"""benchmarks/policies.py runs at tiny size on CPU and times every policy at every slot count.

pytest tests/runtime/test_policy_benchmark.py
"""

from __future__ import annotations

import json

import pytest

from runtime.policies import EVICTION_POLICIES
from tests.project_scripts import load_script

TINY = [
    "--layers",
    "4",
    "--experts",
    "16",
    "--top-k",
    "2",
    "--sequences",
    "2",
    "--prompt-tokens",
    "4",
    "--decode-tokens",
    "6",
    "--repeat",
    "1",
]


def test_victim_benchmark_times_every_policy_at_every_size(tmp_path):
    out = tmp_path / "policies.json"
    result = load_script("benchmarks/policies.py").main([*TINY, "--slots", "4", "16", "--output", str(out)])
    assert json.loads(out.read_text()) == result
    cells = {(row["policy"], row["slots"]): row for row in result["rows"]}
    assert set(cells) == {
        (name, slots) for name in [*EVICTION_POLICIES, "least-stale-predicted+next-use"] for slots in (4, 16)
    }
    for row in cells.values():
        assert row["calls"] > 0  # the tiny trace's working set exceeds both sizes: every policy evicts
        assert 0 <= row["mean_us"] < 1e5 and row["median_us"] <= row["max_us"]


def test_victim_benchmark_rejects_slot_counts_outside_the_model(tmp_path):
    with pytest.raises(SystemExit) as err:
        load_script("benchmarks/policies.py").main([*TINY, "--slots", "64", "--output", str(tmp_path / "x.json")])
    assert err.value.code == 2
