"""The simulator and the runtime count the same: both drive the cache through runtime/driver.py.

Generate with the offloaded embedded model while recording its routing (and router inputs), replay that
recording in `eval.simulate.simulate` with the same eviction, prefetch, capacity and prefetch budget: every
counter must be equal. Every runtime eviction policy (Belady needs the future: simulator only), prefetch
none / router-reuse / predictor (an untrained bank, seeded), two capacities.

Run: pytest tests/eval/test_driver_parity.py
"""

from __future__ import annotations

import copy

import pytest
import torch

import runtime
from eval.simulate import simulate
from eval.trace import Trace
from runtime.policies import EVICTION_POLICIES
from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing
from specmd_predict.embedded import EMBEDDED_MODEL_DIR, load_embedded_model
from specmd_predict.predictors import make_predictor
from specmd_predict.predictors.router_reuse import RouterReusePredictor

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (EMBEDDED_MODEL_DIR / "config.json").exists(), reason="embedded model not built yet"),
]

EVICTIONS = sorted(set(EVICTION_POLICIES) - {"belady"})
PREFETCHES = ["none", "router-reuse", "predictor"]
CAPACITIES = [0.1, 0.3]
COUNTERS = (
    "hits", "misses", "late_prefetches", "collision_misses", "evictions",
    "prefetches_issued", "prefetches_used", "prefetches_wasted", "bytes_moved",
)  # fmt: skip
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model, tokenizer = load_embedded_model()
    adapter = get_adapter(model)
    torch.manual_seed(0)
    bank = make_predictor("residual", adapter=adapter, horizon=2)
    prompt = torch.randint(2, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(3))
    return model, tokenizer.pad_token_id, bank, prompt


def trace_of(record, num_experts: int) -> Trace:
    """The recorded passes (one per forward) as a replayable trace, router inputs kept for the predictors."""
    return Trace.from_recording(record, num_experts)


@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("prefetch", PREFETCHES)
def test_runtime_and_simulator_count_the_same(setup, prefetch, capacity):
    model, pad_token_id, bank, prompt = setup
    adapter = get_adapter(model)
    for eviction in EVICTIONS:
        offloaded = runtime.offload(
            copy.deepcopy(model), capacity=capacity, eviction=eviction, prefetch=prefetch,
            predictors=bank if prefetch == "predictor" else None, device="cpu",  # copies land at once, as replayed
        )  # fmt: skip
        with record_routing(get_adapter(offloaded), keep_inputs=True) as record:
            offloaded.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=pad_token_id)
        measured = runtime.offload_stats(offloaded)
        trace = trace_of(record, adapter.num_experts)
        assert trace.num_passes == measured.passes == NEW_TOKENS
        predictor = {"none": None, "router-reuse": RouterReusePredictor(adapter, horizon=1), "predictor": bank}[
            prefetch
        ]
        replayed = simulate(
            trace, eviction, prefetch, capacity, expert_bytes=adapter.expert_bytes(), predictor=predictor,
            prefetch_kwargs={"horizon": bank.horizon} if prefetch == "predictor" else None,
            prefetch_budget=adapter.top_k,
        )  # fmt: skip
        assert replayed.num_slots == measured.num_slots
        got = {name: getattr(replayed.stats, name) for name in COUNTERS}
        want = {name: getattr(measured, name) for name in COUNTERS}
        assert got == want, (eviction, prefetch, capacity)
        if prefetch != "none":
            assert want["prefetches_issued"] > 0
