"""The simulator forwards a bank's learned next-use table to the evictor (specmd_predict/predictors/next_use.py), and
least-stale-predicted then evicts what the table says is needed last."""

from __future__ import annotations

import numpy as np
import torch

from eval.simulate import simulate
from eval.trace import Trace
from specmd_predict.predictors import make_predictor
from specmd_predict.predictors.next_use import NextUseHead

L, E, K, D = 3, 6, 1, 4
IDENTITY = dict(model_type="olmoe", num_layers=L, num_experts=E, top_k=K, hidden_size=D, router_fingerprint="x")


def trace() -> Trace:
    rng = np.random.default_rng(0)
    ids_NLK = rng.integers(0, E, size=(40, L, K))
    hidden_NLD = rng.standard_normal((40, L, D)).astype(np.float32)
    sequence_N, prompt_N = np.repeat([0, 1], 20), np.tile(np.arange(20) < 2, 2)
    return Trace.from_arrays(ids_NLK, sequence_N, prompt_N, num_experts=E, hidden_NLD=hidden_NLD)


def test_learned_table_reaches_the_evictor_and_orders_its_victims():
    predictor = make_predictor("linear", identity=IDENTITY, horizon=1)
    head = NextUseHead(D, L, E, rank=2)
    with torch.no_grad():  # a constant head: expert e of every layer is next used e + 1 passes later
        head.output.weight.zero_()
        head.output.bias.copy_(torch.log(torch.arange(1.0, E + 1).repeat(L)))
    predictor.attach_next_use(head)
    seen = []
    original = simulate.__globals__["make_eviction"]

    def spy(name, **kwargs):
        policy = original(name, **kwargs)
        forward = policy.on_next_use
        policy.on_next_use = lambda layer, next_LE: (seen.append(next_LE.clone()), forward(layer, next_LE))[1]
        return policy

    simulate.__globals__["make_eviction"] = spy
    try:
        with_table = simulate(trace(), "least-stale-predicted", "predictor", 4, expert_bytes=1, predictor=predictor)
    finally:
        simulate.__globals__["make_eviction"] = original
    assert len(seen) == len(trace().pass_bounds) * L == (2 * (1 + 18)) * L  # one table per (pass, layer)
    torch.testing.assert_close(seen[0], predictor.predict_next_use(0, trace().hidden(0, 0)))
    predictor.next_use_head = None
    without = simulate(trace(), "least-stale-predicted", "predictor", 4, expert_bytes=1, predictor=predictor)
    assert with_table.stats.evictions > 0 and with_table.row() != without.row()  # the table changed the victims
