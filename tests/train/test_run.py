"""A whole training run on a tiny harvest: checkpoint, bank export, recall rows next to the baselines."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from specmd_predict.adapters import get_adapter
from specmd_predict.predictors import load_predictors
from train.config import TrainConfig
from train.export import recall_gains
from train.run import resolve_horizon, resolve_kind, train_predictors


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    settings = dict(
        harvest_path="unused",
        horizon=2,
        rank=16,
        batch_size=64,
        max_epochs=2,
        max_time=None,
        wandb=False,
        progress=False,
        output_dir=str(tmp_path / "runs"),
        bank_dir=str(tmp_path / "bank"),
        name="tiny",
        accelerator="cpu",
    )
    return TrainConfig(**(settings | overrides))


def test_run_exports_bank_and_reports_recall(tiny_harvest, tmp_path):
    model, harvest = tiny_harvest
    result = train_predictors(tiny_config(tmp_path), harvest=harvest)
    names = {"trained (residual)", "router-reuse", "frequency"}
    assert names <= set(result.rows[0])
    assert {(r["layer"], r["horizon"]) for r in result.rows} == {
        (0, 1),
        (1, 1),
        (2, 1),
        ("mean", 1),
        (0, 2),
        (1, 2),
        ("mean", 2),
    }
    # the export keeps the starting point (router reuse for residual) unless training beat it on validation
    means = [r for r in result.rows if r["layer"] == "mean"]
    trained, reuse = (sum(r[n] for r in means) for n in ("trained (residual)", "router-reuse"))
    assert trained >= reuse - 1e-9
    # the rows are recall@K recomputed here from scratch on the validation split: the exported bank's and
    # router reuse's (layer l+h's own router applied to layer l's router input) top-K against the true ids
    split = harvest.validation.with_format("torch")[:]
    hidden_NLD, true_NLK = split["hidden"].float(), split["expert_ids"].long()
    adapter = get_adapter(model)
    by_key = {(r["layer"], r["horizon"]): r for r in result.rows}
    bank_for_recall = load_predictors(result.bank_path)
    with torch.no_grad():
        for l, h in [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2)]:
            reuse_NE = adapter.selection_scores(l + h, hidden_NLD[:, l])
            trained_NE = bank_for_recall.predict(l, hidden_NLD[:, l])[:, h - 1]
            for name, scores_NE in (("router-reuse", reuse_NE), ("trained (residual)", trained_NE)):
                top_NK = scores_NE.topk(2, dim=-1).indices
                common = (top_NK[:, :, None] == true_NLK[:, l + h, None, :]).any(-1).float().sum()
                assert by_key[(l, h)][name] == pytest.approx(float(common) / len(true_NLK) / 2, abs=1e-6)
    for name in names:
        assert by_key[("mean", 2)][name] == pytest.approx((by_key[(0, 2)][name] + by_key[(1, 2)][name]) / 2)
    assert result.best_checkpoint and (result.run_dir / "recall.csv").is_file()
    training = load_predictors(result.bank_path).bank_config["extra"]["training"]
    assert training["message"][1:] in (result.bank_path / "README.md").read_text()  # the card says the same
    assert (result.run_dir / "csv" / "metrics.csv").is_file()
    bank = load_predictors(result.bank_path)
    assert bank.bank_config["extra"]["train_config"]["kind"] == "residual"
    assert json.loads((result.run_dir / "recall.json").read_text()) == result.rows
    hidden_ND = harvest.validation.with_format("torch")[:8]["hidden"][:, 0]
    assert bank.predict(0, hidden_ND).shape == (8, 2, 8)
    assert torch.isfinite(bank.predict(0, hidden_ND)).all()
    last_ND = harvest.validation.with_format("torch")[:8]["hidden"][:, -1]
    assert bank.predicts_next_pass and bank.predict_next_pass(last_ND).shape == (8, 8)
    assert bank.predicts_next_use and bank.predict_next_use(0, hidden_ND).shape == (4, 8)
    quality = bank.bank_config["extra"]["next_use_rank_correlation"]
    assert set(quality) == {"learned", "heuristic", "frequency"}


def test_run_bad_input(tiny_harvest, tmp_path):
    _, harvest = tiny_harvest
    with pytest.raises(FileNotFoundError, match="no harvest at"):
        train_predictors(tiny_config(tmp_path, harvest_path=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="horizon 5 reaches beyond the last MoE layer"):
        train_predictors(tiny_config(tmp_path, horizon=5), harvest=harvest)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "bank").exists()  # a rejected run leaves nothing
    with pytest.raises(ValueError, match="(?i)did you mean 'lowrank'"):
        train_predictors(tiny_config(tmp_path, kind="lowrnak"), harvest=harvest)
    with pytest.raises(ValueError, match="cannot be trained"):
        train_predictors(tiny_config(tmp_path, kind="frequency"), harvest=harvest)


def test_auto_kind_and_default_horizon(tiny_harvest, capsys):
    model, _ = tiny_harvest
    adapter = get_adapter(model)
    assert resolve_kind("auto", adapter) == "residual"
    assert capsys.readouterr().out.strip() == "kind auto: residual (the routers rank experts by their linear logits)"
    assert resolve_horizon(None, adapter) == 3 and capsys.readouterr().out == ""  # 4 MoE layers: 3 fits
    three_layers = SimpleNamespace(num_layers=3)
    assert resolve_horizon(None, three_layers) == 2
    assert "default 3 clamped" in capsys.readouterr().out
    with pytest.raises(ValueError, match="horizon 3 reaches beyond"):
        resolve_horizon(3, three_layers)  # an explicit horizon is never changed silently
    with pytest.raises(ValueError, match="no later layer to predict"):
        resolve_horizon(None, SimpleNamespace(num_layers=1))


def test_export_says_plainly_when_training_did_not_help(tiny_harvest, tmp_path, capsys):
    """With lr 0 nothing moves: the bank is its initialization (router reuse), and the CLI and card say so."""
    _, harvest = tiny_harvest
    result = train_predictors(tiny_config(tmp_path, lr=0.0, max_epochs=1), harvest=harvest)
    assert result.best_checkpoint == "initial"
    assert "TRAINING DID NOT BEAT ITS STARTING POINT" in capsys.readouterr().out
    assert "TRAINING DID NOT BEAT ITS STARTING POINT" in (result.bank_path / "README.md").read_text()
    extra = load_predictors(result.bank_path).bank_config["extra"]
    assert extra["training"]["beat_initialization"] is False
    # the residual kind starts at router reuse: every gain over it is zero, the gain over frequency is the difference
    for gain in extra["recall_gains"]:
        assert gain["gain_vs_router-reuse"] == pytest.approx(0.0, abs=1e-9)
        assert gain["gain_vs_frequency"] == pytest.approx(gain["trained"] - gain["frequency"])
    # the next-pass head starts at layer 0's router run on layer L-1's input: untrained and without the next token,
    # it is router reuse
    next_pass = extra["next_pass_recall"]
    assert next_pass["trained (state only)"] == pytest.approx(next_pass["router-reuse"])


def test_a_run_whose_schedule_followed_the_clock_says_it_will_not_repeat(tiny_harvest, tmp_path, monkeypatch, capsys):
    """The cosine follows --max_time on a slow machine (train.module.cosine_to_budget): the run says so. Here the
    clock reads 5 of the 6 minutes spent from the first step, so the time leads the schedule at once."""
    from lightning.pytorch.callbacks import Timer

    _, harvest = tiny_harvest
    train_predictors(tiny_config(tmp_path, max_epochs=1), harvest=harvest)  # no max_time: steps only
    assert "notice: the learning rate followed" not in capsys.readouterr().out
    monkeypatch.setattr(Timer, "time_elapsed", lambda self, stage="train": 300.0)
    train_predictors(tiny_config(tmp_path, max_epochs=1, max_time="00:00:06:00", name="slow"), harvest=harvest)
    assert "notice: the learning rate followed the --max_time budget (00:00:06:00)" in capsys.readouterr().out


def test_ema_run_validates_and_exports_the_averaged_weights(tiny_harvest, tmp_path):
    """--ema-decay: the best checkpoint's state_dict is Lightning's EMA (the raw weights ride along as
    current_model_state), and the exported bank holds that average, not the last raw weights. (The lowrank kind
    starts from random weights, so training beats its start even on this tiny harvest and a checkpoint is used.)"""
    _, harvest = tiny_harvest
    result = train_predictors(tiny_config(tmp_path, kind="lowrank", ema_decay=0.5), harvest=harvest)
    assert result.best_checkpoint not in (None, "initial")
    checkpoint = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    name = "predictor.mlps.0.0.weight"
    assert not torch.equal(averaged[name], raw[name])  # two different weight sets were kept
    bank = load_predictors(result.bank_path)
    assert torch.equal(bank.mlps[0][0].weight, averaged[name])


def test_recall_gains_hand_checked():
    rows = [{"layer": 0, "horizon": 1, "trained (x)": 0.9, "router-reuse": 0.8, "frequency": 0.5}]
    (gain,) = recall_gains(rows, "trained (x)")
    assert gain["gain_vs_router-reuse"] == pytest.approx(0.1) and gain["gain_vs_frequency"] == pytest.approx(0.4)


def test_routing_only_kind_trains_and_reports(tiny_harvest, tmp_path):
    """specmd-train's routing-only kind: trained from the harvest's ids, exported, reported beside the baselines."""
    _, harvest = tiny_harvest
    result = train_predictors(tiny_config(tmp_path, kind="routing", max_epochs=1), harvest=harvest)
    assert {"trained (routing)", "router-reuse", "frequency"} <= set(result.rows[0])
    bank = load_predictors(result.bank_path)
    assert bank.kind == "routing" and bank.uses_routing
    ids_NLK = harvest.validation.with_format("torch")[:8]["expert_ids"].long()
    assert bank.predict_routing(0, ids_NLK[:, 0]).shape == (8, 2, 8)


def test_auto_rank_is_the_largest_within_the_flops_budget(tiny_harvest, monkeypatch, capsys):
    """rank null: the largest rank whose bank fits COST_BUDGET of an MoE layer's FLOPs, else 256 with the reason."""
    import train.run as run

    model, _ = tiny_harvest
    adapter = get_adapter(model)
    config = TrainConfig(kind="residual", horizon=2, rank=None)
    shares = {rank: run.bank_share(config, adapter, rank) for rank in run.AUTO_RANKS}
    assert list(shares.values()) == sorted(shares.values(), reverse=True)  # a wider MLP costs more
    assert run.resolve_rank(config, adapter) == 256  # a tiny model: even rank 8 is far above 1%
    assert "no rank keeps this bank under 1%" in capsys.readouterr().out
    monkeypatch.setattr(run, "COST_BUDGET", (shares[32] + shares[64]) / 2)
    assert run.resolve_rank(config, adapter) == 32
    assert "rank auto: 32" in capsys.readouterr().out
    assert run.resolve_rank(replace(config, rank=7), adapter) == 7  # an explicit rank is never changed
