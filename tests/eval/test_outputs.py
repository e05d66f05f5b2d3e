"""specmd-eval's integrity: options range-checked in one line, one run per output folder, damaged or hidden
temp banks never picked up."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from eval.cli import _discover_banks, main
from tests.eval.test_cli import tiny_harvest  # noqa: F401  (the module-scoped fixture)

QUICK = ["--no-wandb", "--metrics", "false", "--evictions", "[lru]", "--prefetches", "[none]", "--capacities",
         "[0.5]", "--progress", "false"]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--prefetch-top-k", "-1", "--prefetch-top-k must be at least 1, got -1"),
        ("--prefetch-threshold", "-0.5", "--prefetch-threshold must be in [0.0, 1.0], got -0.5"),
        ("--prefetch-threshold", "1.5", "--prefetch-threshold must be in [0.0, 1.0], got 1.5"),
        ("--max-sequences", "-1", "--max-sequences must be at least 1, got -1"),
        ("--max-sequences", "0", "--max-sequences must be at least 1, got 0"),
        ("--capacities", "[0.0]", "--capacities must be in (0, inf], got 0.0"),
    ],
)
def test_out_of_range_options_are_one_line(option, value, message, tiny_harvest, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "report"
    code = main(["--harvest", str(tiny_harvest), "--output-dir", str(out), *QUICK, option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"specmd-eval: error: {message}"]
    assert not tmp_path.joinpath("report").exists() and list(tmp_path.iterdir()) == []


def test_a_rerun_into_the_same_folder_moves_the_old_run_aside(tiny_harvest, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "report"
    assert main(["--harvest", str(tiny_harvest), "--output-dir", str(out), *QUICK]) == 0
    first = json.loads((out / "run.json").read_text())
    (out / "metrics.csv").write_text("an older run's file\n")  # what a run with --metrics true left
    assert main(["--harvest", str(tiny_harvest), "--output-dir", str(out), *QUICK, "--max-sequences", "1"]) == 0
    printed = capsys.readouterr().out
    assert "moved the earlier run in" in printed
    assert not (out / "metrics.csv").exists()  # the new folder holds the new run's files only
    assert json.loads((out / "run.json").read_text())["config"]["max_sequences"] == 1
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("report.old-")]
    assert json.loads((aside / "run.json").read_text()) == first and (aside / "metrics.csv").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_discovery_skips_hidden_temp_banks_and_names_damaged_ones(tiny_harvest, tmp_path):  # noqa: F811
    from data_pipelines import load_harvest
    from specmd_predict.adapters import get_adapter
    from specmd_predict.predictors import make_predictor, save_bank

    manifest = load_harvest(tiny_harvest).manifest
    adapter = get_adapter(AutoModelForCausalLM.from_pretrained(manifest["model"]["name_or_path"]))
    root = tmp_path / "banks"
    save_bank(make_predictor("linear", adapter=adapter, horizon=1), root / "good")
    save_bank(make_predictor("linear", adapter=adapter, horizon=1), root / ".good.tmp-123-abcd")  # being written
    damaged = save_bank(make_predictor("linear", adapter=adapter, horizon=1), root / "damaged")
    weights = damaged / "predictors.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    said: list[str] = []
    assert _discover_banks(adapter, root, say=said.append) == [str(root / "good")]
    assert len(said) == 1 and "damaged" in said[0] and "predictors.safetensors does not match" in said[0]


def test_metrics_on_a_harvest_without_router_inputs_is_one_line(tiny_harvest, tmp_path, capsys):  # noqa: F811
    from data_pipelines import HarvestConfig, harvest, load_harvest

    model_dir = load_harvest(tiny_harvest).manifest["model"]["name_or_path"]
    bare = harvest(HarvestConfig(model=model_dir, dataset=str(tiny_harvest.parent / "corpus"), seq_len=32,
                                 max_tokens=256, validation_fraction=0.25, hidden_layers=[], device="cpu",
                                 output_dir=str(tmp_path / "bare"), progress=False))  # fmt: skip
    out = tmp_path / "report"
    assert main(["--harvest", str(tiny_harvest), "--output-dir", str(out), *QUICK]) == 0
    earlier = (out / "run.json").read_text()
    capsys.readouterr()
    code = main(["--harvest", str(bare), "--output-dir", str(out), *QUICK, "--metrics", "true"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("specmd-eval:")]
    assert code == 2 and len(err) == 1 and "kept no router inputs (hidden_layers [])" in err[0]
    assert (out / "run.json").read_text() == earlier  # a failed run leaves the earlier one where it was
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name or ".tmp-" in p.name]


def test_a_damaged_bank_named_on_the_command_line_is_one_line(tiny_harvest, tmp_path, capsys):  # noqa: F811
    from data_pipelines import load_harvest
    from specmd_predict.adapters import get_adapter
    from specmd_predict.predictors import make_predictor, save_bank

    manifest = load_harvest(tiny_harvest).manifest
    adapter = get_adapter(AutoModelForCausalLM.from_pretrained(manifest["model"]["name_or_path"]))
    bank = save_bank(make_predictor("linear", adapter=adapter, horizon=1), tmp_path / "banks" / "mine")
    weights = bank / "predictors.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    out = tmp_path / "report"
    code = main(["--harvest", str(tiny_harvest), "--output-dir", str(out), "--banks", f"[{bank}]", *QUICK,
                 "--metrics", "true"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("specmd-eval:")]
    assert code == 2 and len(err) == 1 and "predictors.safetensors does not match its recorded checksum" in err[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
