"""Routing-only prefetch in the simulator: a routing bank (no hidden states) drives `make_prefetch("predictor")`,
keeps the previous pass's ids itself, and beats no prefetch on a trace whose routing is learnable.

Run: pytest tests/eval/test_routing_only_prefetch.py
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import runtime
from eval.simulate import simulate
from eval.trace import Trace
from runtime.policies import make_prefetch
from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing
from specmd_predict.embedded import EMBEDDED_MODEL_DIR, load_embedded_model
from specmd_predict.predictors.routing_only import RoutingOnlyPredictor
from specmd_predict.routing import ExpertKey, Routing

L, E, K = 4, 16, 2
IDENTITY = dict(model_type="routing-trace", num_layers=L, num_experts=E, top_k=K, hidden_size=0, router_fingerprint="t")


def chained_trace(num_sequences: int = 6, tokens: int = 20, seed: int = 0) -> Trace:
    """Layer 0 random; layer j+1 uses (e + 1) mod E for each expert e of layer j: learnable from routing alone."""
    rng = np.random.default_rng(seed)
    first_NK = np.stack([rng.choice(E, K, replace=False) for _ in range(num_sequences * tokens)])
    ids_NLK = np.stack([(first_NK + j) % E for j in range(L)], axis=1)
    sequence_N = np.repeat(np.arange(num_sequences), tokens)
    prompt_N = np.tile(np.arange(tokens) < 4, num_sequences)
    return Trace.from_arrays(ids_NLK, sequence_N, prompt_N, num_experts=E)


def shift_predictor(horizon: int = 2) -> RoutingOnlyPredictor:
    """The routing-only kind with the chain's transition written in (what training would find)."""
    predictor = RoutingOnlyPredictor(IDENTITY, horizon=horizon)
    with torch.no_grad():
        for h in range(horizon):
            predictor.current_LHEE[:, h] = 8.0 * torch.roll(torch.eye(E), shifts=h + 1, dims=1)
    return predictor.eval()


def test_a_routing_bank_prefetches_from_the_routing_and_beats_no_prefetch():
    trace = chained_trace()
    common = dict(eviction="lru", capacity=0.25)
    plain = simulate(trace, prefetch="none", **common)
    learned = simulate(trace, prefetch="predictor", predictor=shift_predictor(), prefetch_kwargs={"top_k": K}, **common)
    assert learned.stats.prefetches_issued > 0
    # layer 0 is random, every later layer is predicted exactly one layer ahead: most misses go away
    assert learned.stats.misses < 0.5 * plain.stats.misses, (learned.stats.misses, plain.stats.misses)


def test_the_policy_keeps_the_previous_pass_ids_for_one_token_passes():
    """The previous token's ids at layer l+1 reach the predictor only on a one-token pass after a whole pass."""
    predictor = RoutingOnlyPredictor(IDENTITY, horizon=1)
    with torch.no_grad():  # only the previous token's choice at l+1 counts: layer l+1 repeats it
        predictor.previous_LHEE[:, 0] = 8.0 * torch.eye(E)
    policy = make_prefetch("predictor", predictor=predictor.eval(), horizon=1, top_k=K)

    def routing(*experts: int) -> Routing:
        ids_TK = torch.tensor([experts])
        return Routing(ids_TK, torch.full(ids_TK.shape, 0.5))

    first = [policy.propose(layer, None, routing(layer, layer + 5)) for layer in range(L)]  # no previous pass yet
    assert all(len(c) == K for c in first[:-1])  # uniform scores: some K experts, not the previous ones
    second = policy.propose(0, None, routing(9, 10))  # a new pass: the previous token chose {1, 6} at layer 1
    assert {key for key, _ in second} == {ExpertKey(1, 1), ExpertKey(1, 6)}
    policy.propose(0, None, Routing(torch.tensor([[1, 2], [3, 4]]), torch.full((2, 2), 0.5)))  # several tokens
    scores = list(policy.probabilities.values())
    assert len(scores) == E and max(scores) - min(scores) < 1e-6  # no previous ids: nothing favoured
    assert policy.prepare(0, None, None) is None  # no ids: nothing to score from


@pytest.mark.slow
@pytest.mark.skipif(not (EMBEDDED_MODEL_DIR / "config.json").exists(), reason="embedded model not built yet")
@pytest.mark.parametrize("capacity", [0.1, 0.3])
def test_runtime_and_simulator_count_the_same_with_a_routing_bank(capacity):
    """The runtime's routing-only prefetch (ids on the device, previous pass kept by the policy) and the
    simulator's (ids from the trace) make the same decisions: every counter equal (tests/eval/test_driver_parity.py
    does this for the other prefetchers)."""
    from tests.eval.test_driver_parity import COUNTERS, NEW_TOKENS, trace_of

    torch.set_num_threads(1)
    model, tokenizer = load_embedded_model()
    adapter = get_adapter(model)
    bank = RoutingOnlyPredictor(adapter.identity(), horizon=2)
    with torch.no_grad():  # seeded random transitions: distinct scores, so no tie decides a prefetch
        for weight in (bank.current_LHEE, bank.previous_LHEE, bank.bias_LHE):
            weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(weight.dim())))
    prompt = torch.randint(2, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(3))
    for eviction in ("lru", "least-stale", "least-stale-predicted"):
        offloaded = runtime.offload(
            copy.deepcopy(model), capacity=capacity, eviction=eviction, prefetch="predictor", predictors=bank,
            device="cpu",  # copies land at once, as the simulator replays them (also on a machine with a GPU)
        )  # fmt: skip
        with record_routing(get_adapter(offloaded)) as record:  # trace_of reads the inputs too
            offloaded.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        measured = runtime.offload_stats(offloaded)
        replayed = simulate(
            trace_of(record, adapter.num_experts), eviction, "predictor", capacity, expert_bytes=adapter.expert_bytes(),
            predictor=bank, prefetch_kwargs={"horizon": bank.horizon}, prefetch_budget=adapter.top_k,
        )  # fmt: skip
        got = {name: getattr(replayed.stats, name) for name in COUNTERS}
        want = {name: getattr(measured, name) for name in COUNTERS}
        assert got == want and want["prefetches_issued"] > 0, (eviction, capacity)
