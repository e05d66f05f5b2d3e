"""The routing-only kind: previous-token ids matched by (sequence, position - 1), a learnable expert-to-expert
transition (recall 1 on a deterministic one), and a bank round trip."""

from __future__ import annotations

import datasets
import torch

from specmd_predict.predictors import load_predictors, save_bank
from specmd_predict.predictors.metrics import multi_hot
from specmd_predict.predictors.recall import LayerHorizonRecall
from specmd_predict.predictors.routing_only import RoutingOnlyPredictor, predict_any, previous_routing_ids

L, E, K = 3, 6, 1
IDENTITY = dict(model_type="olmoe", num_layers=L, num_experts=E, top_k=K, hidden_size=4, router_fingerprint="x")


def test_previous_ids_follow_sequence_and_position():
    rows = [(0, 1, 5), (1, 0, 3), (0, 0, 4), (0, 2, 2)]  # (sequence, position, expert at every layer)
    split = datasets.Dataset.from_dict(
        {
            "sequence_id": [r[0] for r in rows],
            "position": [r[1] for r in rows],
            "expert_ids": [[[r[2]]] * L for r in rows],
        }
    )
    previous = previous_routing_ids(split)
    assert previous["has_previous"].tolist() == [True, False, False, True]
    assert (
        previous["previous_ids"][0, :, 0].tolist() == [4] * L and previous["previous_ids"][3, :, 0].tolist() == [5] * L
    )


def test_learns_a_transition_and_round_trips(tmp_path):
    """Layer j+1 uses expert (e + 1) mod E when layer j used e: after fitting, recall@1 is 1 at every pair."""
    torch.manual_seed(0)
    first_N = torch.randint(0, E, (256,))
    ids_NLK = torch.stack([(first_N + j) % E for j in range(L)], dim=1).unsqueeze(-1)
    predictor = RoutingOnlyPredictor(IDENTITY, horizon=2)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=0.1)
    for _ in range(60):
        loss = 0
        for l in range(L - 1):
            logits_NHE = predictor.logits_routing(l, ids_NLK[:, l])
            for h in range(logits_NHE.shape[1]):
                target_NE = multi_hot(ids_NLK[:, l + 1 + h], E).float()
                loss = loss + torch.nn.functional.cross_entropy(logits_NHE[:, h], target_NE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    metric = LayerHorizonRecall(L, 2, K)
    for l in range(L - 1):
        probs_NHE = predict_any(predictor, l, None, ids_NLK)
        for h in range(probs_NHE.shape[1]):
            metric.update(l, h, probs_NHE[:, h], ids_NLK[:, l + 1 + h])
    recall = metric.result()["recall"][0]
    assert recall[0, 0] == 1 and recall[0, 1] == 1 and recall[1, 0] == 1
    bank = load_predictors(save_bank(predictor, tmp_path / "bank"))
    assert bank.kind == "routing" and torch.equal(
        bank.predict_routing(0, ids_NLK[:, 0]), predictor.predict_routing(0, ids_NLK[:, 0])
    )


def test_without_the_previous_term_previous_ids_change_nothing_and_the_bank_keeps_it(tmp_path):
    predictor = RoutingOnlyPredictor(IDENTITY, horizon=1, use_previous=False)
    assert predictor.previous_LHEE is None and predictor.hparams() == {"use_previous": False}
    with torch.no_grad():
        predictor.current_LHEE.normal_()
    ids_NK = torch.tensor([[1], [4]])
    previous_NLK = torch.randint(0, E, (2, L, K))
    assert torch.equal(predictor.predict_routing(0, ids_NK, previous_NLK), predictor.predict_routing(0, ids_NK))
    bank = load_predictors(save_bank(predictor, tmp_path / "bank"))
    assert not bank.use_previous and torch.equal(bank.predict_routing(0, ids_NK), predictor.predict_routing(0, ids_NK))
