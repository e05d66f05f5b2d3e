"""Learned next use: targets counted by hand across passes, distances as specmd_predict/predictors/next_use.py
defines them, the head round-trips in a bank, and the table reduces over tokens by the minimum."""

from __future__ import annotations

import datasets
import pytest
import torch

from specmd_predict.predictors import load_predictors, make_predictor, save_bank
from specmd_predict.predictors.next_use import (
    MAX_PASSES,
    NextUseHead,
    compose_next_use,
    heuristic_next_use,
    next_use_distance,
    next_use_targets,
    rank_correlation,
    resident_weight,
    true_next_use_tables,
)

IDENTITY = dict(model_type="olmoe", num_layers=2, num_experts=3, top_k=1, hidden_size=4, router_fingerprint="x")


def test_targets_count_passes_to_the_next_use_per_sequence():
    # one expert per layer per token (K=1, L=2, E=3); rows out of order; sequence 0 has 4 tokens, sequence 1 one
    rows = [  # (sequence, position, layer-0 expert, layer-1 expert)
        (0, 2, 0, 2),
        (1, 0, 0, 0),
        (0, 0, 0, 1),
        (0, 3, 1, 1),
        (0, 1, 2, 1),
    ]
    split = datasets.Dataset.from_dict(
        {
            "sequence_id": [r[0] for r in rows],
            "position": [r[1] for r in rows],
            "expert_ids": [[[r[2]], [r[3]]] for r in rows],
        }
    )
    targets = next_use_targets(split, num_experts=3)
    passes_NLE = targets["passes_NLE"].long()
    first = 2  # the row of (sequence 0, position 0)
    assert passes_NLE[first, 0].tolist() == [2, 3, 1]  # layer 0: expert 0 again at position 2, 1 at 3, 2 at 1
    assert passes_NLE[first, 1].tolist() == [MAX_PASSES, 1, 2]  # layer 1: expert 0 never again in sequence 0
    assert passes_NLE[1].eq(MAX_PASSES).all()  # sequence 1's only token: nothing after it
    # passes since the last use, this row's own included: sequence 0's rows at positions 0..3 are rows 2, 4, 0, 3
    since_NLE = targets["since_NLE"].long()
    assert since_NLE[2, 0].tolist() == [0, MAX_PASSES, MAX_PASSES]  # position 0: only its own experts
    assert since_NLE[2, 1].tolist() == [MAX_PASSES, 0, MAX_PASSES]
    assert since_NLE[3, 0].tolist() == [1, 0, 2]  # position 3: layer 0 used 0 at 2, 1 now, 2 at 1
    assert since_NLE[3, 1].tolist() == [MAX_PASSES, 0, 1]
    assert since_NLE[1, 0].tolist() == [0, MAX_PASSES, MAX_PASSES]  # sequence 1 does not see sequence 0's uses
    # the head's loss counts the experts used within MAX_PASSES passes, this one included
    assert resident_weight(since_NLE[3]).tolist() == [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    assert resident_weight(torch.tensor([MAX_PASSES - 1, MAX_PASSES])).tolist() == [1.0, 0.0]
    # distances from (position 0, layer 0): layer 1's expert 1 is used in this pass, 1 step away; the others wait
    distance_LE = next_use_distance(0, torch.tensor([[[0], [1]]]), passes_NLE[first : first + 1], 3)[0]
    L = 2
    assert distance_LE[1].tolist() == [(L - 0) + 1 + L * (MAX_PASSES - 1), 1, (L - 0) + 1 + L * (2 - 1)]
    assert distance_LE[0].tolist() == [(L - 0) + 0 + L * (2 - 1), (L - 0) + 0 + L * (3 - 1), (L - 0) + 0]


def test_head_round_trips_and_reduces_by_minimum(tmp_path):
    predictor = make_predictor("linear", identity=IDENTITY, horizon=1)
    predictor.attach_next_use(NextUseHead(4, num_layers=2, num_experts=3, rank=5))
    hidden_TD = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    next_LE = predictor.predict_next_use(1, hidden_TD)
    assert next_LE.shape == (2, 3)
    log_passes_TLE = predictor.next_use_log_passes(1, hidden_TD)
    expected_LE = compose_next_use(1, predictor.predict(1, hidden_TD), log_passes_TLE).amin(0)
    torch.testing.assert_close(next_LE, expected_LE)
    bank = load_predictors(save_bank(predictor, tmp_path / "bank"))
    assert bank.predicts_next_use and bank.bank_config["heads"]["next_use"] == {"num_layers": 2, "rank": 5}
    torch.testing.assert_close(bank.predict_next_use(1, hidden_TD), next_LE)


def test_rank_correlation():
    true_NX = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert rank_correlation(true_NX * 10, true_NX).item() == pytest.approx(1.0)
    assert rank_correlation(-true_NX, true_NX).item() == pytest.approx(-1.0)
    # masked: only the kept entries count; out of order elsewhere changes nothing
    noisy_NX = true_NX.clone()
    noisy_NX[0, :2] = noisy_NX[0, :2].flip(-1) * 100
    keep_NX = torch.ones_like(true_NX, dtype=torch.bool)
    keep_NX[0, :2] = False
    assert rank_correlation(noisy_NX, true_NX, keep_NX).item() == pytest.approx(1.0)
    assert rank_correlation(noisy_NX, true_NX).item() < 1.0


def test_compose_mixes_this_pass_and_later_passes():
    L = 3
    log_passes_TLE = torch.log(torch.tensor([2.0, 4.0])).view(1, 1, 2).expand(1, L, 2)  # g = 2 and 4 passes
    probs_THE = torch.tensor([[[0.5, 1.0]]])  # layer 1 (h=1) from layer 0: p = 0.5 and 1
    steps_LE = compose_next_use(0, probs_THE, log_passes_TLE)[0]
    later = lambda j, g: (L - 0) + j + L * (g - 1)  # noqa: E731
    assert steps_LE[0].tolist() == pytest.approx([later(0, 2), later(0, 4)])  # the current layer: a later pass
    assert steps_LE[1].tolist() == pytest.approx([0.5 * 1 + 0.5 * later(1, 2), 1.0])  # predicted this pass
    assert steps_LE[2].tolist() == pytest.approx([0.5 * 2 + 0.5 * later(2, 2), 0.25 * 2 + 0.75 * later(2, 4)])
    # the heuristic is the same formula with g = 1 / frequency
    frequency_LE = torch.tensor([[0.5, 0.25]]).expand(L, 2)
    torch.testing.assert_close(heuristic_next_use(0, probs_THE, frequency_LE), steps_LE.unsqueeze(0))


def test_true_tables_count_layer_steps_across_passes():
    # 3 passes, L = 2, E = 2: (0, 0) used at passes 0 and 2, (1, 1) at pass 1 only
    used_PLE = torch.zeros(3, 2, 2, dtype=torch.bool)
    used_PLE[0, 0, 0] = used_PLE[2, 0, 0] = used_PLE[1, 1, 1] = True
    tables_PLLE = true_next_use_tables(used_PLE, max_passes=10)
    L = 2
    assert tables_PLLE[0, 0, 0, 0] == (L - 0) + 0 + L * (2 - 1)  # from (0, 0): next at pass 2, layer 0
    assert tables_PLLE[0, 0, 1, 1] == (L - 0) + 1  # next pass, layer 1
    assert tables_PLLE[1, 0, 1, 1] == 1  # this pass, one layer ahead
    assert tables_PLLE[1, 1, 1, 1] == (L - 1) + 1 + L * (10 + 2 - 1 - 1)  # never again: censored, from pass 1
    assert tables_PLLE[2, 1, 0, 0] == (L - 1) + 0 + L * (10 - 1)  # after the trace's end: max_passes away
