"""The simulator issues only the prefetches that fit beside the layer being computed (runtime/driver.py's room).

An exact oracle that proposes three layers ahead into a cache with room for one layer's experts beside the
current one: uncut, the call's later copies evict its earlier ones (wasted copies, misses on the next layer);
cut to what fits, every copy is used and only each pass's first layer (which nothing predicts) misses.

pytest tests/eval/test_prefetch_fit.py
"""

from __future__ import annotations

import numpy as np
import pytest

from eval.simulate import simulate
from eval.trace import Trace

NUM_LAYERS, NUM_EXPERTS, TOP_K, AHEAD = 6, 8, 2, 3


class ThreeLayersOracle:
    """Reads the next three layers' experts out of the hidden state the test packed them into."""

    num_layers = NUM_LAYERS

    def predict(self, layer, hidden_TD):
        ahead = min(AHEAD, NUM_LAYERS - 1 - layer)
        return hidden_TD[:, : ahead * NUM_EXPERTS].reshape(hidden_TD.shape[0], ahead, NUM_EXPERTS)


def one_token_trace() -> Trace:
    """Four sequences of one-token passes (a prompt of one token, then decode), the exact future in the state."""
    base = Trace.synthetic(
        num_sequences=4, prompt_tokens=1, decode_tokens=15, num_layers=NUM_LAYERS, num_experts=NUM_EXPERTS,
        top_k=TOP_K, seed=5,
    )  # fmt: skip
    ids_NLK = base.expert_ids_NLK
    hidden_NLD = np.zeros((ids_NLK.shape[0], NUM_LAYERS, AHEAD * NUM_EXPERTS), dtype=np.float32)
    for layer in range(NUM_LAYERS):
        for h in range(min(AHEAD, NUM_LAYERS - 1 - layer)):
            np.put_along_axis(hidden_NLD[:, layer, h * NUM_EXPERTS :], ids_NLK[:, layer + 1 + h], 1.0, axis=1)
    sequence = np.repeat(np.arange(4), 16)
    prompt = np.tile(np.arange(16) < 1, 4)
    return Trace.from_arrays(ids_NLK, sequence, prompt, NUM_EXPERTS, hidden_NLD=hidden_NLD)


@pytest.mark.parametrize("eviction", ["lru", "least-stale-reverse", "least-stale-predicted"])
def test_an_exact_prefetcher_that_proposes_past_the_room_wastes_nothing(eviction):
    trace = one_token_trace()
    # 4 slots: the layer computing pins 2, room for 2, while the oracle proposes 3 layers x 2 experts
    result = simulate(
        trace, eviction, "predictor", capacity=4, expert_bytes=1, predictor=ThreeLayersOracle(),
        prefetch_kwargs={"top_k": TOP_K, "horizon": AHEAD},
    )  # fmt: skip
    stats = result.stats
    assert stats.prefetches_issued > 0
    assert stats.prefetches_wasted == 0  # no copy evicted before its use: none by another copy of its own call
    assert stats.layer_misses[1:] == [0] * (NUM_LAYERS - 1)  # every later layer was prefetched in time
    assert stats.layer_misses[0] > 0  # nothing predicts a pass's first layer here
