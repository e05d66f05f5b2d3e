"""Predictor metrics: hand-checked values on a hand-made split, baselines and banks side by side, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Array2D, Dataset, Features

from eval.predictor_metrics import baseline_predictors, cost_rows, next_pass_rows, predictor_metric_rows
from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing
from specmd_predict.predictors import FrequencyPredictor, make_predictor, save_bank
from specmd_predict.predictors.next_pass import NextPassHead
from tests.project_scripts import load_script
from tests.tiny_models import NARROW_OLMOE, NO_SPECIAL_TOKENS, tiny_model

IDENTITY = dict(model_type="olmoe", num_layers=3, num_experts=4, top_k=2, hidden_size=2, router_fingerprint="x")


def split_of(ids_NLK: np.ndarray, hidden_NLD: np.ndarray) -> Dataset:
    features = Features(
        {"expert_ids": Array2D(ids_NLK.shape[1:], "int16"), "hidden": Array2D(hidden_NLD.shape[1:], "float16")}
    )
    return Dataset.from_dict({"expert_ids": ids_NLK, "hidden": hidden_NLD}, features=features)


def test_hand_checked_metrics():
    # the same scores for every token (a frequency table): layer 1 [.9 .8 .1 0], layer 2 [.1 .2 .3 .4]
    table_LE = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    predictor = FrequencyPredictor(IDENTITY, horizon=1, frequency_LE=table_LE)
    layer1_NK = [[0, 1], [0, 2], [2, 3], [0, 1]]
    ids_NLK = np.array([[[0, 1], layer1_NK[n], [2, 3]] for n in range(4)], dtype=np.int16)
    split = split_of(ids_NLK, np.zeros((4, 3, 2), dtype=np.float16))
    rows = predictor_metric_rows({"freq": predictor}, split, ks=(2, 3), progress=False)
    by_layer = {r["layer"]: r for r in rows}
    first = by_layer[0]  # predicts layer 1: hits 2, 1, 0, 2 of K=2 in the top-2; 2, 2, 1, 2 in the top-3
    assert first["recall@2"] == pytest.approx(5 / 8) and first["precision@2"] == pytest.approx(5 / 8)
    assert first["recall@3"] == pytest.approx(7 / 8) and first["precision@3"] == pytest.approx(7 / 12)
    assert first["exact_match"] == pytest.approx(2 / 4)
    # thresholds .9/.8/.1/0 -> (recall, precision) (3/8, 3/4), (5/8, 5/8), (7/8, 7/12), (1, 1/2)
    assert first["average_precision"] == pytest.approx(3 / 8 * 3 / 4 + 2 / 8 * 5 / 8 + 2 / 8 * 7 / 12 + 1 / 8 / 2)
    second = by_layer[1]
    assert second["recall@2"] == second["exact_match"] == second["average_precision"] == pytest.approx(1.0)
    assert by_layer["mean"]["recall@2"] == pytest.approx((5 / 8 + 1) / 2)
    assert 2 not in by_layer  # the last layer has nothing ahead


@pytest.fixture(scope="module")
def tiny():
    model = tiny_model("olmoe", vocab_size=64, **NARROW_OLMOE, **NO_SPECIAL_TOKENS)
    adapter = get_adapter(model)
    with torch.no_grad(), record_routing(adapter) as record:
        model(torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1)))
    hidden_NLD = torch.stack([record.inputs[l][0] for l in range(3)], dim=1).numpy().astype(np.float16)
    ids_NLK = torch.stack([record.routings[l][0].expert_ids_TK for l in range(3)], dim=1).numpy().astype(np.int16)
    return adapter, split_of(ids_NLK, hidden_NLD)


def test_banks_next_to_baselines(tiny, tmp_path):
    adapter, split = tiny
    bank = save_bank(make_predictor("residual", adapter=adapter, horizon=2, rank=4), tmp_path / "bank")
    predictors = baseline_predictors(adapter, split, horizon=2) | {"bank": bank}
    rows = predictor_metric_rows(predictors, split, adapter=adapter, progress=False)
    means = {(r["predictor"], r["horizon"]): r for r in rows if r["layer"] == "mean"}
    assert set(means) == {(n, h) for n in ("router-reuse", "frequency", "bank") for h in (1, 2)}
    for h in (1, 2):  # the untrained residual bank is router reuse exactly
        assert means[("bank", h)]["recall@2"] == pytest.approx(means[("router-reuse", h)]["recall@2"])
    # router reuse at h=1 on a hidden state is the next router applied to it; never worse than chance
    assert means[("router-reuse", 1)]["recall@2"] > 2 / 8


def test_bad_input(tiny, tmp_path):
    adapter, split = tiny
    other = make_predictor("linear", identity=adapter.identity() | {"router_fingerprint": "other"}, horizon=1)
    with pytest.raises(ValueError, match="different model"):
        predictor_metric_rows({"other": save_bank(other, tmp_path / "other")}, split, adapter=adapter)
    with pytest.raises(ValueError, match="no predictor bank at"):
        predictor_metric_rows({"missing": tmp_path / "missing"}, split, adapter=adapter)
    with pytest.raises(ValueError, match="k must be in 1..8"):
        predictor_metric_rows(baseline_predictors(adapter, split, 1), split, ks=(9,), progress=False)


def test_next_pass_and_cost_rows(tiny, tmp_path):
    """An untrained next-pass head is router reuse across the pass boundary; both are checked by hand."""
    adapter, split = tiny
    split = split.add_column("sequence_id", [t // 16 for t in range(64)]).add_column(
        "position", [t % 16 for t in range(64)]
    )
    predictor = make_predictor("linear", adapter=adapter, horizon=1)
    predictor.attach_next_pass(NextPassHead.from_adapter(adapter, rank=4))
    rows = {r["predictor"]: r["recall@2"] for r in next_pass_rows({"bank": predictor}, split, adapter, split)}
    assert set(rows) == {"bank", "router-reuse", "frequency"}
    view = split.with_format("torch")[:]
    hidden_ND, first_NK = view["hidden"][:, -1].float(), view["expert_ids"][:, 0].long()
    hits = []
    for t in range(64):
        if t % 16 == 15:
            continue  # a sequence's last token has no next pass
        top_K = adapter.selection_scores(0, hidden_ND[t : t + 1]).topk(2).indices[0]
        hits.append(len(set(top_K.tolist()) & set(first_NK[t + 1].tolist())) / 2)
    assert rows["router-reuse"] == pytest.approx(sum(hits) / len(hits)) and rows["bank"] == rows["router-reuse"]
    (cost,) = cost_rows({"bank": predictor, **baseline_predictors(adapter, split, horizon=1)}, adapter)
    assert cost["predictor"] == "bank" and 0 < cost["mean_share"] < cost["max_share"]


def test_default_bank_costs_under_one_percent_on_real_shapes(capsys):
    """examples/predictor_cost.py: with rank auto, the default bank is below 1% of OLMoE-1B-7B's MoE layer FLOPs per
    token, while on the embedded model no rank can be (its router alone is 4% per horizon)."""
    assert load_script("examples/predictor_cost.py").main(["--shapes", "embedded", "olmoe-1b-7b"]) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in capsys.readouterr().out.splitlines()[2:]}
    share = {name: float(cells[1].strip().rstrip("%")) / 100 for name, cells in rows.items()}
    assert share["olmoe-1b-7b"] < 0.01 and int(rows["olmoe-1b-7b"][0]) < 256
    assert share["embedded"] > 0.2 and rows["embedded"][0].strip() == "256"
