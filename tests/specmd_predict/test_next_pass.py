"""The next token's first MoE layer: targets matched by (sequence, position + 1), a head that starts at router
reuse across the pass boundary, saved and loaded with a bank."""

from __future__ import annotations

import datasets
import pytest
import torch

from specmd_predict.adapters import get_adapter
from specmd_predict.predictors import load_predictors, make_predictor, save_bank
from specmd_predict.predictors.next_pass import (
    NextPassHead,
    next_pass_baselines,
    next_pass_recall,
    next_pass_scorers,
    next_pass_targets,
    token_layer0_counts,
)
from tests.tiny_models import NARROW_OLMOE, tiny_model


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
    assert "next_token" not in targets  # no token_id column
    tokens = split.add_column("token_id", [e + 100 for _, _, e in rows])
    assert next_pass_targets(tokens)["next_token"].tolist() == [111, 121, 122, 0, 0, 0]


def _token_split():
    """6 rows of 2 sequences; layer 0 picks experts {t % 4, (t + 1) % 4} for token t, so a token table is exact."""
    tokens = [[1, 2, 3, 1], [3, 2, 1, 2]]
    rows = [(s, p, t) for s, seq in enumerate(tokens) for p, t in enumerate(seq)]
    return datasets.Dataset.from_dict(
        {
            "sequence_id": [s for s, _, _ in rows],
            "position": [p for _, p, _ in rows],
            "token_id": [t for _, _, t in rows],
            "expert_ids": [[[t % 4, (t + 1) % 4], [0, 1]] for _, _, t in rows],  # [L=2, K=2]
            "hidden": [[[0.0] * 3, [float(t), 1.0, 0.0]] for _, _, t in rows],  # [L=2, D=3]
            "phase": ["prefill", "prefill", "decode", "decode"] * 2,
        }
    )


def test_token_table_counts_and_predicts_layer0_from_the_next_token(tmp_path):
    split = _token_split()
    counts_VE = token_layer0_counts(split, vocab_size=5, num_experts=4)
    assert counts_VE[2].tolist() == [0, 0, 3, 3] and counts_VE[0].sum() == 0  # token 2 seen 3 times, token 0 never
    with pytest.raises(ValueError, match="exceed the model's vocabulary"):
        token_layer0_counts(split, vocab_size=3, num_experts=4)
    head = NextPassHead(hidden_size=3, num_experts=4, rank=2, vocab_size=5)
    head.set_token_table(counts_VE)
    hidden_TD = torch.zeros(3, 3)
    assert torch.equal(head(hidden_TD), torch.zeros(3, 4))  # no token: the head alone (zero here)
    top_TK = head(hidden_TD, torch.tensor([1, 2, 3])).topk(2).indices.sort(-1).values
    assert top_TK.tolist() == [[1, 2], [2, 3], [0, 3]]
    unseen_E = head.token_log_table_VE[0]  # an unseen token falls back to the overall layer-0 frequency
    assert torch.allclose(unseen_E.softmax(-1), ((counts_VE.sum(0) + 1) / (counts_VE.sum() + 4)), atol=1e-6)
    with pytest.raises(ValueError, match="no token table"):
        NextPassHead(3, 4, rank=2).set_token_table(counts_VE)
    # the counted table is where training starts: a step moves the rows of the tokens in the batch, no others
    before_VE = head.token_log_table_VE.detach().clone()
    head(hidden_TD, torch.tensor([1, 2, 2])).log_softmax(-1)[:, 0].sum().backward()
    torch.optim.SGD([head.token_log_table_VE], lr=1.0).step()
    moved_V = (head.token_log_table_VE.detach() != before_VE).any(-1)
    assert moved_V.tolist() == [False, True, True, False, False]


def test_next_pass_recall_with_tokens_and_phases():
    split = _token_split()
    head = NextPassHead(hidden_size=3, num_experts=4, rank=2, vocab_size=5)
    head.set_token_table(token_layer0_counts(split, 5, 4))
    identity = {"model_type": "x", "num_layers": 2, "num_experts": 4, "top_k": 2, "hidden_size": 3,
                "router_fingerprint": "0"}  # fmt: skip
    predictor = make_predictor("linear", identity=identity, horizon=1)
    predictor.attach_next_pass(head)
    assert predictor.next_pass_uses_token
    scorers = next_pass_scorers(predictor)
    assert set(scorers) == {"trained (with next token)", "trained (state only)", "token table only"}
    recall = next_pass_recall(scorers, split, last_index=1, top_k=2)
    assert recall["token table only"] == pytest.approx(1.0)
    assert recall["trained (with next token)"] == pytest.approx(1.0)
    # rows whose next pass is a decode pass: positions 1 -> 2 and 2 -> 3 of each sequence
    decode = next_pass_recall(scorers, split, last_index=1, top_k=2, phase="decode")
    assert decode["token table only"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="generate-mode"):
        next_pass_recall(scorers, split.remove_columns("phase"), last_index=1, top_k=2, phase="decode")


def test_head_starts_at_router_reuse_and_round_trips(tmp_path):
    model = tiny_model("olmoe", vocab_size=64, **NARROW_OLMOE)
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
    assert bank.predicts_next_pass and bank.bank_config["heads"] == {"next_pass": {"rank": 4, "vocab_size": 0}}
    assert torch.equal(bank.predict_next_pass(hidden_TD), predictor.predict_next_pass(hidden_TD))
