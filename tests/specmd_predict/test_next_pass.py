"""The next token's first MoE layer: targets matched by (sequence, position + 1), a head that starts at router
reuse across the pass boundary, saved and loaded with a bank."""

from __future__ import annotations

import datasets
import torch

from specmd_predict.adapters import get_adapter
from specmd_predict.predictors import load_predictors, make_predictor, save_bank
from specmd_predict.predictors.next_pass import NextPassHead, next_pass_baselines, next_pass_targets
from tests.tiny_models import tiny_model


def test_targets_follow_sequence_and_position_in_any_row_order():
    # rows deliberately out of order (as a generate-mode harvest writes them: one pass at a time)
    rows = [(1, 0, 10), (0, 0, 20), (0, 1, 21), (1, 1, 11), (0, 2, 22), (1, 3, 13)]
    split = datasets.Dataset.from_dict(
        {
            "sequence_id": [s for s, _, _ in rows],
            "position": [p for _, p, _ in rows],
            "expert_ids": [[[e, e + 1], [0, 0]] for _, _, e in rows],  # [L=2, K=2]; layer 0 holds (e, e+1)
        }
    )
    targets = next_pass_targets(split)
    assert targets["has_next"].tolist() == [True, True, True, False, False, False]  # (1,1) -> (1,2) is missing
    assert targets["next_ids"][:3].tolist() == [[11, 12], [21, 22], [22, 23]]


def test_head_starts_at_router_reuse_and_round_trips(tmp_path):
    model = tiny_model(
        "olmoe", vocab_size=64, hidden_size=16, num_attention_heads=2, num_key_value_heads=1, intermediate_size=8
    )
    adapter = get_adapter(model)
    predictor = make_predictor("linear", adapter=adapter, horizon=1)
    assert not predictor.predicts_next_pass
    predictor.attach_next_pass(NextPassHead.from_adapter(adapter, rank=4))
    hidden_TD = torch.randn(20, 16, generator=torch.Generator().manual_seed(1))
    reuse_TE = next_pass_baselines(adapter, torch.zeros(8))["router-reuse"](hidden_TD)
    got_TK = predictor.predict_next_pass(hidden_TD).topk(2).indices.sort(-1).values
    assert torch.equal(got_TK, reuse_TE.topk(2).indices.sort(-1).values)
    with torch.no_grad():
        predictor.next_pass_head.correction[-1].bias.normal_()  # make it differ from its start
    bank = load_predictors(save_bank(predictor, tmp_path / "bank"), adapter=adapter)
    assert bank.predicts_next_pass and bank.bank_config["heads"] == {"next_pass": {"rank": 4}}
    assert torch.equal(bank.predict_next_pass(hidden_TD), predictor.predict_next_pass(hidden_TD))
