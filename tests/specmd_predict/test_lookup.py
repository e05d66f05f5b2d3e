"""Registry lookups (specmd_predict/lookup.py): the hit, and the one-line error with its closest name and the list.

pytest tests/specmd_predict/test_lookup.py
"""

from __future__ import annotations

import pytest

from specmd_predict.lookup import did_you_mean, lookup


def test_lookup_returns_the_entry_or_names_the_closest_and_all():
    registry = {"lru": 1, "lfu": 2, "fifo": 3}
    assert lookup(registry, "fifo", "eviction policy") == 3
    with pytest.raises(ValueError) as err:
        lookup(registry, "fifi", "eviction policy", note=" (or build one)")
    assert str(err.value) == "unknown eviction policy 'fifi'. Did you mean 'fifo'? Known: fifo, lfu, lru (or build one)"
    with pytest.raises(ValueError) as err:
        lookup(registry, "belady", "eviction policy")
    assert str(err.value) == "unknown eviction policy 'belady'. Known: fifo, lfu, lru"  # nothing close: no hint


def test_did_you_mean_prefers_the_first_list_with_a_close_name():
    assert did_you_mean("treshold", ["top_k"], ["threshold", "thresholds"]) == " Did you mean 'threshold'?"
    assert did_you_mean("treshold", ["thresholds"], ["threshold"]) == " Did you mean 'thresholds'?"
    assert did_you_mean("xyz", ["threshold"]) == ""
