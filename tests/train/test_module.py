"""A few Lightning steps on a tiny harvest: the loss falls, validation logs recall, the bank round-trips."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from specmd_predict.adapters import get_adapter
from specmd_predict.predictors import load_predictors, make_predictor, save_bank
from train.data import HarvestDataModule
from train.module import PredictorModule, cosine_to_budget, selection_bce


def fit(model, harvest, kind: str, loss: str, steps: int, **hparams):
    L.seed_everything(0, workers=True)
    adapter = get_adapter(model)
    predictor = make_predictor(kind, adapter=adapter, horizon=2, **hparams)
    dm = HarvestDataModule(harvest, horizon=2, batch_size=64, use_logits=loss == "kl")
    module = PredictorModule(predictor, loss=loss, lr=1e-2)
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        before = module.compute_loss(batch).item()
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(module, dm)
    with torch.no_grad():
        after = module.compute_loss(batch).item()
    return module, dm, trainer, before, after


@pytest.mark.parametrize(("kind", "loss"), [("residual", "bce"), ("shared", "kl")])
def test_loss_falls_and_bank_round_trips(tiny_harvest, tmp_path, kind, loss):
    model, harvest = tiny_harvest
    module, dm, trainer, before, after = fit(model, harvest, kind, loss, steps=8, rank=16)
    assert after < before
    bank = load_predictors(save_bank(module.predictor, tmp_path / "bank"), adapter=get_adapter(model))
    hidden_ND = next(iter(dm.val_dataloader()))["hidden"][:, 1]
    assert torch.equal(bank.predict(1, hidden_ND), module.predictor.predict(1, hidden_ND))


def test_validation_logs_recall_per_layer_and_horizon(tiny_harvest):
    model, harvest = tiny_harvest
    module, _, trainer, _, _ = fit(model, harvest, "linear", "bce", steps=2)
    trainer.validate(module, datamodule=HarvestDataModule(harvest, horizon=2, batch_size=64), verbose=False)
    logged = trainer.callback_metrics
    assert {"val/recall", "val/recall_h1", "val/recall_h2", "val/recall_l0_h2", "val/recall_l2_h1"} <= set(logged)
    assert "val/recall_l3_h1" not in logged and "val/recall_l2_h2" not in logged
    # the logged numbers are the shared metric's, and equal the report's recall of the same predictor
    from train.report import recall_rows

    rows = recall_rows({"p": module.predictor}, harvest.validation, progress=False)
    by_pair = {(r["layer"], r["horizon"]): r["p"] for r in rows}
    assert float(logged["val/recall_l0_h2"]) == pytest.approx(by_pair[(0, 2)], abs=1e-6)
    assert float(logged["val/recall_h1"]) == pytest.approx(by_pair[("mean", 1)], abs=1e-6)
    # the logged values are recall@K recomputed here from scratch: |top-K predicted & true| / K over all tokens
    hits, tokens = {}, 0
    with torch.no_grad():
        for batch in HarvestDataModule(harvest, horizon=2, batch_size=64).val_dataloader():
            tokens += batch["hidden"].shape[0]
            for l in range(3):
                logits_NHE = module.predictor.logits(l, batch["hidden"][:, l].float())
                for h in range(logits_NHE.shape[1]):
                    top_NK = logits_NHE[:, h].topk(2, dim=-1).indices
                    true_NK = batch["expert_ids"][:, l + 1 + h].long()
                    common = (top_NK[:, :, None] == true_NK[:, None, :]).any(-1).sum().item()
                    hits[(l, h + 1)] = hits.get((l, h + 1), 0) + common
    expected = {key: value / tokens / 2 for key, value in hits.items()}
    for (l, h), value in expected.items():
        assert float(logged[f"val/recall_l{l}_h{h}"]) == pytest.approx(value, abs=1e-6)
    per_horizon = [sum(v for (_, h), v in expected.items() if h == horizon) / (4 - horizon) for horizon in (1, 2)]
    assert float(logged["val/recall_h1"]) == pytest.approx(per_horizon[0], abs=1e-6)
    assert float(logged["val/recall"]) == pytest.approx(sum(per_horizon) / 2, abs=1e-6)


class FakeTimer:
    """Lightning's Timer as the schedule reads it: seconds elapsed and remaining of max_time."""

    def __init__(self, budget: float | None):
        self.budget, self.elapsed = budget, 0.0

    def time_elapsed(self) -> float:
        return self.elapsed

    def time_remaining(self) -> float | None:
        return None if self.budget is None else self.budget - self.elapsed


def test_cosine_ends_at_the_planned_step_or_at_max_time_whichever_is_first():
    by_steps = cosine_to_budget(100)
    assert [round(by_steps(step), 6) for step in (0, 50, 100, 150)] == [1.0, 0.5, 0.0, 0.0]
    timer = FakeTimer(budget=60.0)
    schedule = cosine_to_budget(100, timer)
    timer.elapsed = 10.0
    assert schedule(50) == pytest.approx(0.5)  # a fast machine: 10 s in, the steps lead
    assert not schedule.clock_led  # so far the run repeats bit for bit
    timer.elapsed = 45.0  # a slow one: 3/4 of max_time spent at step 50, so the time leads
    assert schedule(50) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    assert schedule.clock_led  # ... and from here the learning rates depend on the machine's speed
    timer.elapsed = 70.0  # past the cap (Lightning stops at the next step): settled at zero
    assert schedule(50) == 0.0
    no_cap = cosine_to_budget(100, FakeTimer(budget=None))
    assert no_cap(50) == pytest.approx(0.5) and not no_cap.clock_led  # no max_time: steps only


def test_selection_bce_matches_direct_formula():
    logits_xE = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    target_xE = torch.zeros(5, 8).scatter_(1, torch.tensor([[0, 1]] * 5), 1.0)
    p_xE = 1 - (1 - torch.softmax(logits_xE, -1)) ** 2
    expected = torch.nn.functional.binary_cross_entropy(p_xE, target_xE)
    torch.testing.assert_close(selection_bce(logits_xE, target_xE, top_k=2), expected)


def test_label_smoothing_moves_the_target_towards_k_of_e():
    logits_xE = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    target_xE = torch.zeros(5, 8).scatter_(1, torch.tensor([[0, 1]] * 5), 1.0)
    p_xE = 1 - (1 - torch.softmax(logits_xE, -1)) ** 2
    smoothed_xE = target_xE * 0.9 + 0.1 * 2 / 8
    expected = torch.nn.functional.binary_cross_entropy(p_xE, smoothed_xE)
    torch.testing.assert_close(selection_bce(logits_xE, target_xE, top_k=2, label_smoothing=0.1), expected)


def test_weight_decay_spares_the_copied_routers(tiny_harvest):
    """The residual kind's router copies start at the real routers: decay would pull them to zero, not to that
    start, so only the correction MLP decays."""
    model, _ = tiny_harvest
    predictor = make_predictor("residual", adapter=get_adapter(model), horizon=2, rank=16)
    module = PredictorModule(predictor, lr=1e-2, weight_decay=0.1, lr_schedule="constant")
    others, routers = module.configure_optimizers().param_groups
    assert others["weight_decay"] == 0.1 and routers["weight_decay"] == 0.0
    router_names = [n for n, _ in predictor.named_parameters() if n.startswith("router_")]
    assert router_names and len(routers["params"]) == len(router_names)


def test_bad_input_is_a_clear_error(tiny_harvest, tmp_path):
    _, harvest = tiny_harvest
    with pytest.raises(FileNotFoundError, match="no harvest at"):
        HarvestDataModule(tmp_path / "missing")
    with pytest.raises(ValueError, match="horizon 4 reaches beyond the last MoE layer"):
        HarvestDataModule(harvest, horizon=4)


def test_next_use_loss_counts_only_recently_used_experts():
    """The next-use head's loss skips the (j, e) the sequence has not used within MAX_PASSES passes
    (next_use.py's resident_weight): changing their targets leaves the loss as it is, changing the others does not."""
    from specmd_predict.predictors.next_use import MAX_PASSES, NextUseHead

    identity = dict(model_type="olmoe", num_layers=2, num_experts=3, top_k=1, hidden_size=4, router_fingerprint="x")
    predictor = make_predictor("linear", identity=identity, horizon=1)
    predictor.attach_next_use(NextUseHead(4, num_layers=2, num_experts=3, rank=5))
    module = PredictorModule(predictor, loss="bce", lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    since_NLE = torch.full((6, 2, 3), MAX_PASSES, dtype=torch.uint8)
    since_NLE[:, 0, 1] = 0  # used now
    since_NLE[:, 1, 2] = 5  # used 5 passes ago
    batch = {
        "hidden": torch.randn(6, 2, 4, generator=generator),
        "passes_NLE": torch.randint(1, MAX_PASSES + 1, (6, 2, 3), generator=generator, dtype=torch.uint8),
        "since_NLE": since_NLE,
    }
    with torch.no_grad():
        loss = module.next_use_loss(batch)
        unused = dict(batch, passes_NLE=batch["passes_NLE"].clone())
        unused["passes_NLE"][:, 0, 0] = 1  # an expert not used within MAX_PASSES: not in the loss
        assert torch.equal(module.next_use_loss(unused), loss)
        used = dict(batch, passes_NLE=batch["passes_NLE"].clone())
        used["passes_NLE"][:, 1, 2] = MAX_PASSES - used["passes_NLE"][:, 1, 2] + 1  # a recent one: in the loss
        assert not torch.equal(module.next_use_loss(used), loss)
