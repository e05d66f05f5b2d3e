"""benchmarks/next_token_prefetch.py: its options, a bank without a token table refused in one line, and a tiny run
on the embedded model with an untrained token-table bank (both rows decode the same tokens' worth of requests).

Run: pytest tests/runtime/test_next_token_benchmark.py
"""

from __future__ import annotations

import json

import pytest
import torch

from specmd_predict.embedded import EMBEDDED_MODEL_DIR
from tests.project_scripts import load_script


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmarks/next_token_prefetch.py")


def embedded_bank(path, with_table: bool):
    from specmd_predict.adapters import get_adapter
    from specmd_predict.embedded import load_embedded_model
    from specmd_predict.predictors import make_predictor
    from specmd_predict.predictors.bank import save_bank
    from specmd_predict.predictors.next_pass import NextPassHead

    model, _ = load_embedded_model()
    adapter = get_adapter(model)
    torch.manual_seed(0)
    bank = make_predictor("residual", adapter=adapter, horizon=1, rank=8)
    head = NextPassHead.from_adapter(adapter, rank=8, vocab_size=model.config.vocab_size if with_table else 0)
    if with_table:
        head.set_token_table(torch.randint(0, 4, (model.config.vocab_size, adapter.num_experts)).float())
    bank.attach_next_pass(head)
    return save_bank(bank, path)


@pytest.mark.parametrize(
    "argv, message",
    [(["--capacities", "0.1,x"], "comma-separated"), (["--capacities", "1.5"], "(0, 1]"), (["--prompts", "0"], ">= 1")],
)
def test_bad_options_are_one_line(benchmark, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.parse_args(["--bank", "b", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(not (EMBEDDED_MODEL_DIR / "config.json").exists(), reason="embedded model not built yet")
def test_tiny_run_and_a_bank_without_a_table(benchmark, tmp_path, capsys):
    plain = embedded_bank(tmp_path / "plain", with_table=False)
    assert benchmark.main(["--bank", str(plain), "--output", str(tmp_path / "x.json")]) == 2
    assert "no next-pass token table" in capsys.readouterr().err and not (tmp_path / "x.json").exists()

    bank = embedded_bank(tmp_path / "bank", with_table=True)
    output = tmp_path / "result.json"
    argv = ["--bank", str(bank), "--capacities", "0.25", "--prompts", "1", "--new_tokens", "3", "--prompt_tokens", "8"]
    assert benchmark.main([*argv, "--output", str(output)]) == 0
    rows = json.loads(output.read_text())["rows"]
    assert [row["mode"] for row in rows] == ["state only", "with next token"]
    num_layers, top_k = 8, 4  # the embedded model: every decode step requests top-k experts at each MoE layer
    assert all(row["requests"] == 3 * num_layers * top_k for row in rows)
    assert all(0.0 <= row["layer0_hit_rate"] <= 1.0 and row["prefetches_issued"] > 0 for row in rows)
