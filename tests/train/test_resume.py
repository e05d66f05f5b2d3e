"""specmd-train's run folders: an interrupted run resumes to the same result, `--resume false` and finished or
different runs are moved aside (one run per folder), one writer per folder, and options are range-checked."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from data_pipelines import HarvestConfig, harvest
from specmd_predict.io import target_lock
from tests.train.test_run import tiny_config
from train.cli import main
from train.run import train_predictors


class KillAfterEpoch(Callback):
    """Stands in for a crash or kill -9 at the end of training epoch `epoch` (before its checkpoint)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("killed")


class CountEpochs(Callback):
    def __init__(self):
        self.started = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.started += 1


def test_interrupted_training_resumes_to_the_same_recall(tiny_harvest, tmp_path, capsys):
    """lowrank starts from random weights, so the exported bank is a trained checkpoint, never the start."""
    from safetensors.torch import load_file

    _, h = tiny_harvest
    whole = train_predictors(tiny_config(tmp_path / "a", kind="lowrank", max_epochs=3), harvest=h)
    assert whole.best_checkpoint.endswith("best.ckpt")  # training mattered: the test below is not trivial
    config = tiny_config(tmp_path / "b", kind="lowrank", max_epochs=3)
    with pytest.raises(RuntimeError, match="killed"):
        train_predictors(config, harvest=h, callbacks=[KillAfterEpoch(1)])  # after epoch 0's checkpoint
    run_dir = tmp_path / "b" / "runs" / "tiny"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "recall.json").exists()
    assert not (tmp_path / "b" / "bank").exists()  # no bank from a killed run
    capsys.readouterr()
    epochs = CountEpochs()
    resumed = train_predictors(config, harvest=h, callbacks=[epochs])
    assert f"resuming {run_dir}" in capsys.readouterr().out and epochs.started == 2  # epochs 1 and 2 only
    key = "trained (lowrank)"
    assert [r[key] for r in resumed.rows] == pytest.approx([r[key] for r in whole.rows], abs=1e-6)
    weights = [load_file(r.bank_path / "predictors.safetensors") for r in (whole, resumed)]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, atol=1e-6, rtol=0)
    assert not [p for p in run_dir.parent.iterdir() if ".old-" in p.name]  # resumed in place, nothing moved


def test_resume_false_starts_over_and_moves_the_old_run_aside(tiny_harvest, tmp_path, capsys):
    _, h = tiny_harvest
    config = tiny_config(tmp_path, max_epochs=2)
    with pytest.raises(RuntimeError, match="killed"):
        train_predictors(config, harvest=h, callbacks=[KillAfterEpoch(1)])
    capsys.readouterr()
    train_predictors(tiny_config(tmp_path, max_epochs=2, resume=False), harvest=h)
    assert "moved the earlier run in" in capsys.readouterr().out
    (aside,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("tiny.old-")]
    assert (aside / "checkpoints" / "last.ckpt").is_file() and not (aside / "recall.json").exists()
    assert (tmp_path / "runs" / "tiny" / "recall.json").is_file()


def test_a_rerun_of_a_finished_or_different_run_never_mixes_files(tiny_harvest, tmp_path, capsys):
    _, h = tiny_harvest
    first = train_predictors(tiny_config(tmp_path, max_epochs=1), harvest=h)
    rows_file = first.run_dir / "recall.json"
    (first.run_dir / "marker").write_text("from the first run")
    train_predictors(tiny_config(tmp_path, max_epochs=1, lr=3e-3), harvest=h)  # same name, other settings
    assert "moved the earlier run in" in capsys.readouterr().out
    assert not (first.run_dir / "marker").exists() and rows_file.is_file()
    (aside,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("tiny.old-")]
    assert (aside / "marker").exists() and json.loads((aside / "recall.json").read_text()) == first.rows


def test_one_writer_per_run_folder(tiny_harvest, tmp_path):
    _, h = tiny_harvest
    run_dir = tmp_path / "runs" / "tiny"
    with target_lock(run_dir), pytest.raises(ValueError, match="another specmd-train is writing"):
        train_predictors(tiny_config(tmp_path, max_epochs=1), harvest=h)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--rank", "-1"], "--rank must be at least 1, got -1"),
        (["--rank", "0"], "--rank must be at least 1, got 0"),
        (["--max-epochs", "-1"], "--max-epochs must be at least 1, got -1"),
        (["--max-time", "bogus"], "--max-time must be DD:HH:MM:SS"),
        (["--ema-decay", "1"], "--ema-decay must be below 1, got 1.0"),
        (["--label-smoothing", "-0.1"], "--label-smoothing must be in [0.0, 1.0], got -0.1"),
    ],
)
def test_out_of_range_options_are_one_line(args, message, tmp_path, capsys):
    code = main(["--harvest-path", str(tmp_path / "h"), "--output-dir", str(tmp_path / "runs"), "--no-wandb", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"specmd-train: error: {message}")
    assert list(tmp_path.iterdir()) == []


def test_a_harvest_without_router_inputs_is_one_line(tiny_harvest, tmp_path, capsys):
    _, h = tiny_harvest
    model_dir = h.manifest["model"]["name_or_path"]
    config = HarvestConfig(model=model_dir, seq_len=32, max_tokens=32 * 4, validation_fraction=0.25,
                           hidden_layers=[], device="cpu", output_dir=str(tmp_path / "h"), progress=False)  # fmt: skip
    path = harvest(config)
    code = main(["--harvest-path", str(path), "--output-dir", str(tmp_path / "runs"), "--no-wandb"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("specmd-train:")]  # (transformers' load bar aside)
    assert code == 2 and len(lines) == 1 and "kept no router inputs (hidden_layers [])" in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


KILLED_RUN = """
import json, os, signal, sys
from lightning.pytorch.callbacks import Callback
from train.config import TrainConfig
from train.run import train_predictors

class KillNine(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handler: a real kill -9

train_predictors(TrainConfig(**json.loads(sys.argv[1])), callbacks=[KillNine()])
"""


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_same_bank(tiny_harvest, tmp_path, capsys):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from train.config import TrainConfig

    _, h = tiny_harvest
    settings = dict(harvest_path=str(h.path), kind="lowrank", horizon=2, rank=16, batch_size=64, max_epochs=3,
                    max_time=None, wandb=False, progress=False, name="tiny", accelerator="cpu")  # fmt: skip
    whole = train_predictors(TrainConfig(**settings, output_dir=str(tmp_path / "a"), bank_dir=str(tmp_path / "ab")))
    killed = dict(settings, output_dir=str(tmp_path / "b"), bank_dir=str(tmp_path / "bb"))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(killed)], cwd=root, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (tmp_path / "bb").exists() and not (tmp_path / "b" / "tiny" / "recall.json").exists()
    capsys.readouterr()
    resumed = train_predictors(TrainConfig(**killed))
    assert "resuming" in capsys.readouterr().out
    weights = [load_file(r.bank_path / "predictors.safetensors") for r in (whole, resumed)]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, atol=1e-6, rtol=0)
