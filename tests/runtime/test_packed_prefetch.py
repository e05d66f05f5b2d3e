"""The decode fast path of the predictor prefetch (rows packed as each row's top-k) proposes exactly what the
full [R, 2, E] rows propose: the same experts, scores and order (ties by ascending id)."""

from __future__ import annotations

import pytest
import torch
from tiny_moe import tiny_model

from runtime.policies.prefetch_predictor import PredictorPrefetch
from specmd_predict.adapters import get_adapter
from specmd_predict.predictors import RouterReusePredictor


class FixedPredictor:
    """Answers preset [1, H, E] probabilities, whatever the layer and hidden state."""

    num_layers = 6

    def __init__(self, probs_1HE: torch.Tensor):
        self.probs_1HE = probs_1HE

    def predict(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        return self.probs_1HE


def proposals(probs_1HE: torch.Tensor, keep_probabilities: bool, top_k: int = 3):
    policy = PredictorPrefetch(FixedPredictor(probs_1HE), horizon=probs_1HE.shape[1], top_k=top_k)
    policy.keep_probabilities = keep_probabilities
    prepared = policy.prepare(1, torch.zeros(1, 8))
    return policy._packed, prepared.shape, policy.select(1, prepared)


@pytest.mark.parametrize("seed", range(4))
def test_packed_rows_propose_what_the_full_rows_propose(seed):
    generator = torch.Generator().manual_seed(seed)
    probs_1HE = torch.rand(1, 2, 16, generator=generator)
    probs_1HE[0, 1, 3] = probs_1HE[0, 1, 9] = probs_1HE[0, 1, 12] = 0.999  # a tie among the chosen: ids ascending
    packed, packed_shape, fast = proposals(probs_1HE, keep_probabilities=False)
    full, full_shape, slow = proposals(probs_1HE, keep_probabilities=True)
    assert packed and not full
    assert packed_shape == (2, 2, 3) and full_shape == (2, 2, 16)  # the host reads k values per row, not E
    assert [key for key, _ in fast] == [key for key, _ in slow]
    assert [key.layer for key, _ in fast] == [2, 2, 2, 3, 3, 3]
    assert [key.expert for key, _ in fast[3:]] == [3, 9, 12]
    assert [score for _, score in fast] == pytest.approx([score for _, score in slow])


def test_several_tokens_or_a_threshold_keep_the_full_rows():
    policy = PredictorPrefetch(FixedPredictor(torch.rand(2, 1, 16)), horizon=1, top_k=2)
    policy.keep_probabilities = False
    assert policy.prepare(1, torch.zeros(2, 8)).shape == (1, 2, 16) and not policy._packed
    policy = PredictorPrefetch(FixedPredictor(torch.rand(1, 1, 16)), horizon=1, threshold=0.5)
    policy.keep_probabilities = False
    assert policy.prepare(1, torch.zeros(1, 8)).shape == (1, 2, 16) and not policy._packed


@pytest.mark.parametrize("family", ["olmoe", "deepseek_v3", "gpt_oss"])  # softmax, sigmoid, and top-k-then-softmax
def test_router_reuse_top_path_proposes_what_its_full_rows_propose(family):
    """Router reuse's own `predict_top` (k scores per router, probability on the host) against the generic rows of
    its `predict`: same experts in the same order with the same probabilities, at every layer (the last one
    predicts the next pass's layer 0), every horizon."""
    adapter = get_adapter(tiny_model(family))
    generator = torch.Generator().manual_seed(3)
    for horizon in range(1, adapter.num_layers):
        predictor = RouterReusePredictor(adapter, horizon=horizon)
        fast = PredictorPrefetch(predictor, horizon=horizon, top_k=adapter.top_k)
        fast.keep_probabilities = False
        full = PredictorPrefetch(predictor, horizon=horizon, top_k=adapter.top_k)
        for layer in range(adapter.num_layers):
            router = adapter.router(layer)
            hidden_TD = torch.randn(1, adapter.config.hidden_size, generator=generator).to(next(router.parameters()))
            packed_rows = fast.prepare(layer, hidden_TD)
            assert fast._packed and fast._score_to_probability is not None
            scores_RK, ids_RK = packed_rows  # two tensors: no cast, no stack
            assert scores_RK.shape[-1] == ids_RK.shape[-1] == adapter.top_k  # k values per row read back, not E
            assert scores_RK.dtype == torch.float32 and ids_RK.dtype == torch.long
            got, expected = fast.select(layer, packed_rows), full.select(layer, full.prepare(layer, hidden_TD))
            assert [key for key, _ in got] == [key for key, _ in expected]
            assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=1e-5)


def test_router_reuse_top_path_orders_a_tie_by_ascending_id():
    """A tie among `predict_top`'s k scores (top-k may leave equals in any order) comes out as the full rows order
    it: best first, ascending ids among equal scores; the scores become probabilities 1 - (1 - q)^K."""
    adapter = get_adapter(tiny_model("olmoe"))
    predictor = RouterReusePredictor(adapter, horizon=1)
    policy = PredictorPrefetch(predictor, horizon=1, top_k=4)
    policy.keep_probabilities = False
    router = adapter.router(0)
    policy.prepare(0, torch.zeros(1, adapter.config.hidden_size).to(next(router.parameters())))  # sets the plan
    scores_RK = torch.tensor([[0.4, 0.2, 0.2, 0.1]])
    ids_RK = torch.tensor([[5, 7, 2, 1]])
    got = policy.select(0, (scores_RK, ids_RK))
    assert [(key.layer, key.expert) for key, _ in got] == [(1, 5), (1, 2), (1, 7), (1, 1)]
    top_k = adapter.top_k
    expected = [1 - (1 - q) ** top_k for q in (0.4, 0.2, 0.2, 0.1)]
    assert [score for _, score in got] == pytest.approx(expected)
