"""The one recall metric: hand-checked sums per (layer, horizon), NaN for pairs never seen, merging like DDP."""

from __future__ import annotations

import math

import pytest
import torch

from specmd_predict.predictors.recall import LayerHorizonRecall

SCORES_TE = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
TRUE_TK = torch.tensor([[0, 2], [3, 2]])


def test_hand_checked_recall_precision_exact():
    metric = LayerHorizonRecall(num_layers=3, horizon=2, top_k=2, ks=(2, 3))
    metric.update(0, 1, SCORES_TE, TRUE_TK)  # top-2 hits: 1 and 2; top-3 hits: 2 and 2
    out = metric.result()
    assert out["recall"][0, 0, 1].item() == pytest.approx((1 + 2) / 2 / 2)
    assert out["recall"][1, 0, 1].item() == pytest.approx((2 + 2) / 2 / 2)
    assert out["precision"][1, 0, 1].item() == pytest.approx((2 + 2) / 2 / 3)
    assert out["exact_match"][0, 1].item() == pytest.approx(0.5)
    assert math.isnan(out["recall"][0, 0, 0].item()) and math.isnan(out["exact_match"][2, 1].item())


def test_state_sums_like_a_ddp_reduction():
    """Two shards merged (what torchmetrics' sum reduction does across processes) equal one pass over all rows."""
    whole = LayerHorizonRecall(2, 1, 2)
    whole.update(0, 0, SCORES_TE, TRUE_TK)
    first, second = LayerHorizonRecall(2, 1, 2), LayerHorizonRecall(2, 1, 2)
    first.update(0, 0, SCORES_TE[:1], TRUE_TK[:1])
    second.update(0, 0, SCORES_TE[1:], TRUE_TK[1:])
    first.merge_state(second)
    torch.testing.assert_close(first.result()["recall"], whole.result()["recall"], equal_nan=True)
    assert whole.result()["recall"][0, 0, 0].item() == pytest.approx(0.75)


def test_bad_input():
    metric = LayerHorizonRecall(2, 1, 2)
    with pytest.raises(ValueError, match="2 score rows but 1 rows"):
        metric.update(0, 0, SCORES_TE, TRUE_TK[:1])
    with pytest.raises(ValueError, match="k=5"):
        LayerHorizonRecall(2, 1, 2, ks=(5,)).update(0, 0, SCORES_TE, TRUE_TK)


def test_one_pair_keeps_its_shape():
    """torchmetrics squeezes one-element results; `result` gives them back their [len(ks), L, H] shape."""
    metric = LayerHorizonRecall(1, 1, 2)
    metric.update(0, 0, SCORES_TE, TRUE_TK, mask_N=torch.tensor([True, False]))  # only the first row counts
    out = metric.result()
    assert out["recall"].shape == (1, 1, 1) and out["recall"][0, 0, 0].item() == pytest.approx(0.5)
    assert out["tokens"][0, 0].item() == 1
