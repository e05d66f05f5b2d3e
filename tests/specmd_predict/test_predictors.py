"""Predictors: router reuse is the routers run early, the residual kind starts exactly there, banks round-trip."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing
from specmd_predict.predictors import (
    PREDICTOR_KINDS,
    BankError,
    FrequencyPredictor,
    ResidualRouterPredictor,
    RouterReusePredictor,
    load_predictors,
    make_predictor,
    recall_at_k,
    save_bank,
)
from specmd_predict.predictors.residual import router_fits_residual
from tests import tiny_models

TINY = tiny_models.NARROW_OLMOE | tiny_models.NO_SPECIAL_TOKENS | dict(vocab_size=64, num_hidden_layers=4)


def tiny_model(seed: int = 0):
    return tiny_models.tiny_model("olmoe", seed, **TINY)


@pytest.fixture(scope="module")
def captured():
    model = tiny_model()
    adapter = get_adapter(model)
    input_ids = torch.randint(0, TINY["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), record_routing(adapter) as record:
        model(input_ids)
    hidden_LTD = torch.stack([record.inputs[l][0] for l in range(adapter.num_layers)])
    ids_LTK = torch.stack([record.routings[l][0].expert_ids_TK for l in range(adapter.num_layers)])
    return adapter, hidden_LTD, ids_LTK


def test_router_reuse_is_the_later_router_run_early(captured):
    adapter, hidden_LTD, _ = captured
    predictor = RouterReusePredictor(adapter, horizon=2)
    for layer in range(adapter.num_layers - 1):
        probs_THE = predictor.predict(layer, hidden_LTD[layer])
        assert probs_THE.shape == (24, min(2, adapter.num_layers - 1 - layer), adapter.num_experts)
        assert probs_THE.min() >= 0 and probs_THE.max() <= 1
        for h in range(1, probs_THE.shape[1] + 1):
            expected_TK = adapter.route(layer + h, hidden_LTD[layer]).expert_ids_TK.sort(-1).values
            got_TK = probs_THE[:, h - 1].topk(adapter.top_k, dim=-1).indices.sort(-1).values
            assert torch.equal(got_TK, expected_TK)
    assert predictor.predict(adapter.num_layers - 1, hidden_LTD[-1]).shape == (24, 0, adapter.num_experts)


def test_residual_predictor_starts_exactly_at_router_reuse(captured):
    adapter, hidden_LTD, _ = captured
    reuse = RouterReusePredictor(adapter, horizon=3)
    residual = ResidualRouterPredictor.from_adapter(adapter, horizon=3, rank=8)
    for layer in range(adapter.num_layers):
        torch.testing.assert_close(residual.predict(layer, hidden_LTD[layer]), reuse.predict(layer, hidden_LTD[layer]))


def test_residual_fits_granite_top_k_on_raw_logits():
    """Granite ranks experts by raw logits (no softmax): the residual kind fits, and starts at router reuse."""
    adapter = get_adapter(tiny_models.tiny_model("granitemoe", **TINY))
    assert router_fits_residual(adapter) is None
    residual = ResidualRouterPredictor.from_adapter(adapter, horizon=2, rank=8)
    hidden_TD = torch.randn(32, TINY["hidden_size"], generator=torch.Generator().manual_seed(2))
    for h in (1, 2):
        expected_TK = adapter.route(h, hidden_TD).expert_ids_TK.sort(-1).values
        got_TK = residual.predict(0, hidden_TD)[:, h - 1].topk(2, dim=-1).indices.sort(-1).values
        assert torch.equal(got_TK, expected_TK)


def test_residual_rejects_routers_whose_ranking_is_not_the_logits(captured):
    adapter, _, _ = captured
    bias_E = torch.linspace(-3, 3, adapter.num_experts)  # a correction bias, as in DeepSeek-V3, changes the ranking
    original = adapter.selection_scores
    adapter.selection_scores = lambda layer, hidden_TD: original(layer, hidden_TD) + bias_E
    try:
        assert "do not rank experts as its linear router's logits do" in router_fits_residual(adapter)
    finally:
        del adapter.selection_scores


def test_horizon_beyond_last_layer_is_a_clear_error(captured):
    adapter, _, _ = captured
    with pytest.raises(ValueError, match="horizon 4 reaches beyond the last MoE layer"):
        RouterReusePredictor(adapter, horizon=4)
    with pytest.raises(ValueError, match="horizon 0"):
        make_predictor("linear", adapter=adapter, horizon=0)


def test_unknown_kind_suggests_a_name(captured):
    adapter, _, _ = captured
    with pytest.raises(ValueError, match="(?i)did you mean 'linear'"):
        make_predictor("linaer", adapter=adapter)


def test_frequency_predictor_counts_each_layer(captured):
    adapter, hidden_LTD, ids_LTK = captured
    predictor = FrequencyPredictor.from_expert_ids(ids_LTK.permute(1, 0, 2), adapter.identity(), horizon=1)
    probs_THE = predictor.predict(0, hidden_LTD[0])
    expected_E = torch.bincount(ids_LTK[1].flatten(), minlength=adapter.num_experts).float() / ids_LTK.shape[1]
    torch.testing.assert_close(probs_THE[5, 0], expected_E)
    torch.testing.assert_close(probs_THE.sum(-1), torch.full((24, 1), float(adapter.top_k)))


@pytest.mark.parametrize("kind", sorted(k for k in PREDICTOR_KINDS if k != "routing"))  # routing: test_routing_only
def test_bank_round_trip_gives_identical_outputs(captured, kind, tmp_path):
    adapter, hidden_LTD, _ = captured
    torch.manual_seed(0)
    hparams = {} if kind in ("linear", "frequency") else {"rank": 8}
    predictor = make_predictor(kind, adapter=adapter, horizon=2, **hparams)
    with torch.no_grad():  # move away from the init so the round trip is a real check
        for p in predictor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    bank_dir = save_bank(predictor, tmp_path / "bank", extra={"note": "test"})
    loaded = load_predictors(bank_dir, adapter=adapter)
    assert loaded.kind == kind and loaded.horizon == 2 and loaded.bank_config["extra"] == {"note": "test"}
    for layer in range(adapter.num_layers):
        assert torch.equal(loaded.predict(layer, hidden_LTD[layer]), predictor.predict(layer, hidden_LTD[layer]))
    save_bank(predictor, bank_dir)  # overwriting an existing bank works and leaves no temporary directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank"]


@pytest.mark.parametrize("kind", ["residual", "lowrank"])
def test_deeper_mlp_round_trips_and_residual_still_starts_at_router_reuse(captured, kind, tmp_path):
    adapter, hidden_LTD, _ = captured
    predictor = make_predictor(kind, adapter=adapter, horizon=2, rank=8, depth=3)
    mlp = predictor.corrections[0] if kind == "residual" else predictor.mlps[0]
    shapes = [tuple(m.weight.shape) for m in mlp if isinstance(m, torch.nn.Linear)]
    assert shapes == [(8, adapter.hidden_size), (8, 8), (8, 8), (2 * adapter.num_experts, 8)]  # 2 horizons out
    if kind == "residual":  # the zeroed output layer keeps the start at router reuse, however deep the MLP
        reuse = RouterReusePredictor(adapter, horizon=2)
        torch.testing.assert_close(predictor.predict(0, hidden_LTD[0]), reuse.predict(0, hidden_LTD[0]))
    with torch.no_grad():
        for p in predictor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    loaded = load_predictors(save_bank(predictor, tmp_path / "bank"), adapter=adapter)
    assert loaded.depth == 3
    assert torch.equal(loaded.predict(1, hidden_LTD[1]), predictor.predict(1, hidden_LTD[1]))
    with pytest.raises(ValueError, match="depth must be at least 1"):
        make_predictor(kind, adapter=adapter, horizon=2, rank=8, depth=0)


def test_bank_for_another_model_is_rejected(captured, tmp_path):
    adapter, _, _ = captured
    save_bank(make_predictor("linear", adapter=adapter, horizon=1), tmp_path / "bank")
    other = get_adapter(tiny_model(seed=1))
    with pytest.raises(ValueError, match="different model.*router_fingerprint"):
        load_predictors(tmp_path / "bank", adapter=other)
    with pytest.raises(ValueError, match="different model"):
        load_predictors(tmp_path / "bank").check_model(other)


def test_missing_or_corrupted_bank_is_a_clear_error(captured, tmp_path):
    adapter, _, _ = captured
    with pytest.raises(BankError, match="no predictor bank at"):
        load_predictors(tmp_path / "nowhere")
    bank_dir = save_bank(make_predictor("lowrank", adapter=adapter, horizon=1, rank=4), tmp_path / "bank")
    weights = bank_dir / "predictors.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(BankError, match=r"predictor bank .* is damaged: predictors\.safetensors does not match"):
        load_predictors(bank_dir)
    (bank_dir / "config.json").write_text("{not json")
    with pytest.raises(BankError, match="not valid JSON"):
        load_predictors(bank_dir)
    (bank_dir / "config.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(BankError, match="format version 99"):
        load_predictors(bank_dir)
    with pytest.raises(BankError, match="cannot be saved"):
        save_bank(RouterReusePredictor(adapter, horizon=1), tmp_path / "reuse")


def test_recall_at_k_hand_checked():
    scores_TE = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    true_ids_TK = torch.tensor([[0, 2], [3, 2]])
    assert recall_at_k(scores_TE, true_ids_TK) == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert recall_at_k(scores_TE, true_ids_TK, k=3) == pytest.approx((2 / 2 + 2 / 2) / 2)
    with pytest.raises(ValueError, match="k=5"):
        recall_at_k(scores_TE, true_ids_TK, k=5)


def test_importing_predictors_pulls_in_no_lightning_or_wandb():
    code = (
        "import sys, specmd_predict.predictors as p; "
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'wandb') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_flipped_weight_byte_is_refused_naming_the_file(captured, tmp_path):
    """A flipped byte inside a float (not the header) loads fine with safetensors: the checksum catches it."""
    adapter, _, _ = captured
    bank_dir = save_bank(make_predictor("lowrank", adapter=adapter, horizon=1, rank=4), tmp_path / "bank")
    weights = bank_dir / "predictors.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40  # an exponent bit of the last float
    weights.write_bytes(bytes(data))
    with pytest.raises(BankError, match=r"predictors\.safetensors does not match its recorded checksum") as info:
        load_predictors(bank_dir, adapter=adapter)
    assert "\n" not in str(info.value) and str(bank_dir) in str(info.value)
    weights.unlink()
    with pytest.raises(BankError, match=r"predictors\.safetensors is missing"):
        load_predictors(bank_dir)


def test_bank_without_recorded_checksum_is_refused(captured, tmp_path):
    adapter, _, _ = captured
    bank_dir = save_bank(make_predictor("linear", adapter=adapter, horizon=1), tmp_path / "bank")
    config = json.loads((bank_dir / "config.json").read_text())
    del config["checksums"]
    (bank_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(BankError, match="records no checksum of predictors.safetensors"):
        load_predictors(bank_dir)


def test_banks_are_written_with_umask_permissions(captured, tmp_path):
    import os
    import stat

    adapter, _, _ = captured
    old = os.umask(0o022)
    try:
        bank_dir = save_bank(make_predictor("linear", adapter=adapter, horizon=1), tmp_path / "bank")
    finally:
        os.umask(old)
    assert stat.S_IMODE(bank_dir.stat().st_mode) == 0o755  # others can read it (mkdtemp gave 0700)
    assert {stat.S_IMODE(p.stat().st_mode) for p in bank_dir.iterdir()} == {0o644}
