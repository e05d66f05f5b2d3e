"""`specmd-eval` on a `--mode generate` harvest (eval/phase_shift.py): decode tokens replay as one-token passes,
the shift table judges every predictor on prefill and on decode rows, and examples/phase_shift.py trains one
bank per phase with the train API.

    pytest tests/eval/test_phase_shift.py
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from data_pipelines import HarvestConfig, ensure_harvest, load_harvest
from data_pipelines.generate import phase_view
from eval.cli import main
from eval.trace import Trace
from tests.project_scripts import load_script
from tests.tiny_models import tiny_olmoe_and_corpus

PROMPT, NEW, SEQUENCES = 8, 12, 8
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("phase-shift")
    model_dir, corpus = tiny_olmoe_and_corpus(root)
    return ensure_harvest(HarvestConfig(model=str(model_dir), dataset=str(corpus), mode="generate",
                                        prompt_tokens=PROMPT, new_tokens=NEW, max_tokens=(PROMPT + NEW) * SEQUENCES,
                                        validation_fraction=0.25, device="cpu", output_dir=str(root / "harvest"),
                                        progress=False))  # fmt: skip


def test_decode_tokens_replay_as_one_token_passes(generated):
    h = load_harvest(generated)
    trace = Trace.from_harvest(h, split="validation", with_hidden=False)
    assert trace.num_passes == 2 * (1 + NEW)  # two validation sequences: one prefill pass + one pass per token
    assert trace.pass_is_prefill == ([True] + [False] * NEW) * 2
    assert trace.pass_bounds[:3] == [(0, PROMPT), (PROMPT, PROMPT + 1), (PROMPT + 1, PROMPT + 2)]
    view = phase_view(h, "decode")
    assert set(view.train["phase"]) == {"decode"} and len(view.validation) == 2 * NEW
    assert len(phase_view(h, "prefill").train) == 6 * PROMPT


def test_eval_reports_the_shift_table(generated, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["--harvest", str(generated), "--no-wandb", "--capacities", "[0.25, 0.5]", "--horizon", "2",
                 "--evictions", "[lru, least-stale-predicted]", "--output-dir", str(out),
                 "--progress", "false"])  # fmt: skip
    assert code == 0
    assert "Prefill vs decode shift" in capsys.readouterr().out
    with (out / "shift.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["predictor"], r["evaluated_on"], r["horizon"]) for r in rows} == {
        (p, phase, h) for p in ("router-reuse", "frequency") for phase in ("prefill", "decode") for h in ("1", "2")
    }
    assert {r["num_tokens"] for r in rows if r["evaluated_on"] == "decode"} == {str(2 * NEW)}
    assert all(0.0 <= float(r["recall@2"]) <= 1.0 for r in rows)
    cache = json.loads((out / "cache.json").read_text())
    assert cache["config"]["trace"]["num_passes"] == 2 * (1 + NEW)


@pytest.mark.slow
def test_phase_shift_example_trains_one_bank_per_phase(generated, tmp_path):
    argv = ["--harvest", str(generated), "--horizon", "2", "--max-epochs", "1", "--output-dir", str(tmp_path)]
    result = load_script("examples/phase_shift.py").main([*argv, "--no-progress"])
    judged = {(r["predictor"], r["evaluated_on"]) for r in result["shift"] if r["horizon"] == 1}
    assert {("trained-on-prefill", "prefill"), ("trained-on-prefill", "decode"), ("trained-on-decode", "prefill"),
            ("trained-on-decode", "decode")} <= judged  # fmt: skip
    assert (tmp_path / "banks" / "trained-on-decode").is_dir()
