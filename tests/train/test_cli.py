"""specmd-train's command line: the default YAML equals the defaults, bad input exits 2 with one line,
and (slow) the real pipeline from harvest to bank on the embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from specmd_predict.embedded import EMBEDDED_MODEL_DIR
from specmd_predict.predictors import load_predictors
from train.cli import main, parse_config

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "train" / "configs" / "default.yaml"


def test_default_yaml_is_the_default_config():
    assert DEFAULT_YAML.read_text().startswith("# specmd-train")
    assert parse_config(["--config", str(DEFAULT_YAML)]) == parse_config([])


def test_cli_overrides_and_no_wandb():
    config = parse_config(
        ["--config", str(DEFAULT_YAML), "--kind", "lowrank", "--no-wandb", "--harvest.max_tokens", "512"]
    )
    assert (config.kind, config.wandb, config.harvest.max_tokens) == ("lowrank", False, 512)


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["--harvest_path", str(tmp_path / "missing"), "--no-wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("specmd-train: error: no harvest at") and "\n" not in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.skipif(not (EMBEDDED_MODEL_DIR / "config.json").exists(), reason="embedded model not built")
def test_end_to_end_on_the_embedded_model(tmp_path):
    argv = [
        "--harvest.max_tokens",
        "4096",
        "--harvest.output_root",
        str(tmp_path / "harvests"),
        "--harvest.device",
        "cpu",
        "--max_epochs",
        "1",
        "--no-wandb",
        "--progress",
        "false",
        "--output_dir",
        str(tmp_path / "runs"),
        "--bank_dir",
        str(tmp_path / "bank"),
        "--accelerator",
        "cpu",
    ]
    assert main(argv) == 0
    bank = load_predictors(tmp_path / "bank")
    assert bank.kind == "residual" and bank.horizon == 3
    assert (tmp_path / "runs" / "embedded-residual" / "recall.csv").is_file()


@pytest.mark.slow
def test_default_output_is_our_lines_only(tiny_harvest, tmp_path):
    """Without --verbose no library line (Lightning's accelerator summary and litlogger tip, the pytree
    deprecation, the IterableDataset advice) and with --progress false no bar: stderr stays empty."""
    import subprocess
    import sys

    _, harvest = tiny_harvest
    args = ["--harvest-path", str(harvest.path), "--horizon", "2", "--rank", "16", "--max-epochs", "1", "--no-wandb",
            "--progress", "false", "--output-dir", str(tmp_path / "runs"), "--bank-dir", str(tmp_path / "bank"),
            "--accelerator", "cpu"]  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "train.cli", *args], capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert "GPU available" not in run.stdout and "Tip" not in run.stdout and "bank: " in run.stdout
