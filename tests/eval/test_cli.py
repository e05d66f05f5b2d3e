"""`specmd-eval` end to end on a harvest of a tiny random OLMoE (eval/cli.py): both tables, reports, errors.

pytest tests/eval/test_cli.py
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from eval.cli import main
from tests.tiny_models import tiny_olmoe_and_corpus


@pytest.fixture(scope="module")
def tiny_harvest(tmp_path_factory):
    from data_pipelines import HarvestConfig, ensure_harvest

    root = tmp_path_factory.mktemp("eval-cli")
    model_dir, corpus = tiny_olmoe_and_corpus(root)
    return ensure_harvest(
        HarvestConfig(
            model=str(model_dir),
            dataset=str(corpus),
            seq_len=32,
            max_tokens=1024,
            prompt_tokens=8,
            validation_fraction=0.25,
            device="cpu",
            output_dir=str(root / "harvest"),
            progress=False,
        )
    )


@pytest.mark.slow
def test_eval_cli_end_to_end(tiny_harvest, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "--harvest",
            str(tiny_harvest),
            "--no-wandb",
            "--capacities",
            "[0.25, 0.5]",
            "--output_dir",
            str(out),
            "--evictions",
            "[lru, least-stale, least-stale-predicted]",
            "--prefetches",
            "[none, router-reuse, predictor]",
            "--progress",
            "false",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Predictor metrics" in printed and "Expert-cache benchmark" in printed
    names = {p.name for p in out.iterdir()}
    assert {"metrics.csv", "cache.csv", "cache.json", "run.json", "hit_rate_vs_capacity.png"} <= names
    rows = json.loads((out / "cache.json").read_text())["rows"]
    assert {r["prefetch"] for r in rows} == {"none", "router-reuse", "predictor"}
    assert all(r["hit_rate"] <= r["belady_hit_rate"] + 1e-12 for r in rows if r["prefetch"] == "none")
    assert any(r["prefetches_issued"] > 0 for r in rows)
    assert all(r["tpot_s"] > 0 for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--evictions", "[lur]", "--output_dir"],
            "specmd-eval: error: unknown eviction policy 'lur'. Did you mean 'lru'?",
        ),
        (["--capacities", "[1]", "--progress=false", "--output-dir"], "below one expert"),
    ],
    ids=["misspelled-eviction", "capacity-below-one-expert"],
)
def test_eval_cli_bad_input(tiny_harvest, tmp_path, capsys, options, message):
    argv = ["--harvest", str(tiny_harvest), "--no-wandb", "--metrics", "false", *options, str(tmp_path)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_eval_cli_missing_harvest(tmp_path, capsys):
    assert main(["--harvest", str(tmp_path / "missing"), "--no-wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("specmd-eval: error:") and "\n" not in err and "Traceback" not in err


def test_trained_banks_of_the_harvested_model_are_found(tiny_harvest, tmp_path):
    """With no --banks, specmd-eval picks up what specmd-train exported for this model, and nothing else."""
    from data_pipelines import load_harvest
    from eval.cli import _discover_banks
    from specmd_predict.adapters import get_adapter
    from specmd_predict.predictors import make_predictor, save_bank

    manifest = load_harvest(tiny_harvest).manifest
    model = AutoModelForCausalLM.from_pretrained(manifest["model"]["name_or_path"])
    adapter = get_adapter(model)
    root = tmp_path / "banks"
    save_bank(make_predictor("linear", adapter=adapter, horizon=1), root / "mine")
    other = dict(adapter.identity(), router_fingerprint="0" * 16)
    save_bank(make_predictor("linear", identity=other, horizon=1), root / "other-model")
    (root / "not-a-bank").mkdir()
    assert _discover_banks(adapter, root) == [str(root / "mine")]
    # the baselines' horizon comes from the banks evaluated, else the default clamped to the model's layers
    from eval.cli import bank_horizon

    save_bank(make_predictor("linear", adapter=adapter, horizon=2), root / "deeper")
    assert bank_horizon([str(root / "mine")], adapter.num_layers) == 1
    assert bank_horizon([str(root / "mine"), str(root / "deeper")], adapter.num_layers) == 2
    assert bank_horizon([], 3) == 2 and bank_horizon([], 8) == 3


@pytest.mark.slow
def test_a_routing_bank_is_reported_beside_the_baselines_and_prefetches(tiny_harvest, tmp_path):
    """The default (harvest) specmd-eval: a routing-only bank's recall next to router reuse and frequency, and
    the same bank as the `predictor` prefetch (the policy feeds it the trace's ids)."""
    import csv

    from train.config import TrainConfig
    from train.run import train_predictors

    config = TrainConfig(
        harvest_path=str(tiny_harvest), kind="routing", horizon=2, max_epochs=1, max_time=None, wandb=False,
        progress=False, output_dir=str(tmp_path / "runs"), bank_dir=str(tmp_path / "bank"), accelerator="cpu",
    )  # fmt: skip
    bank = train_predictors(config).bank_path
    out = tmp_path / "report"
    args = ["--harvest", str(tiny_harvest), "--banks", f"[{bank}]", "--capacities", "[0.5]", "--evictions", "[lru]"]
    assert main([*args, "--no-wandb", "--progress", "false", "--output-dir", str(out)]) == 0
    with (out / "metrics.csv").open() as handle:
        assert {"bank", "router-reuse", "frequency"} <= {row["predictor"] for row in csv.DictReader(handle)}
    rows = json.loads((out / "cache.json").read_text())["rows"]
    learned = [r for r in rows if r["prefetch"] == "predictor"]
    assert learned and all(r["prefetches_issued"] > 0 for r in learned)
