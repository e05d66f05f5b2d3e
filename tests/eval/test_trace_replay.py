"""`specmd-eval --trace` (eval/trace_replay.py): a hand-made trace replays with every history-only policy,
hidden-state policies are reported unavailable, and a malformed trace is one line, exit 2, nothing written.
Also the FLAME-MoE converter of examples/ on a tiny stand-in of its .pt layout.

    pytest tests/eval/test_trace_replay.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eval.cache_benchmark import DEFAULT_EVICTIONS
from eval.cli import main
from tests.project_scripts import load_script

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_example_trace_replays_with_every_history_only_policy(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "--trace",
            str(EXAMPLES / "routing_trace.jsonl"),
            "--no-wandb",
            "--capacities",
            "[0.25, 0.5]",
            "--prefetches",
            "[none, router-reuse, predictor]",
            "--output-dir",
            str(out),
            "--progress",
            "false",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "unavailable prefetch router-reuse: needs router inputs (hidden states)" in " ".join(printed.split())
    rows = json.loads((out / "cache.json").read_text())["rows"]
    assert {r["eviction"] for r in rows} == set(DEFAULT_EVICTIONS)
    assert {r["prefetch"] for r in rows} == {"none"}
    assert all(r["requests"] == 18 for r in rows)  # 4 passes: (3+3) + (2+2) + (2+2) + (2+2) experts
    assert all(r["hit_rate"] <= r["belady_hit_rate"] + 1e-12 for r in rows)
    run = json.loads((out / "run.json").read_text())
    assert set(run["unavailable"]) == {"prefetch router-reuse", "prefetch predictor", "predictor metrics"}


def test_malformed_trace_is_one_line_and_writes_nothing(tmp_path, capsys):
    lines = (EXAMPLES / "routing_trace.jsonl").read_text().splitlines()
    bad = json.loads(lines[3])
    bad["expert_ids"] = [6, 9]
    (tmp_path / "bad.jsonl").write_text("\n".join([*lines[:3], json.dumps(bad), *lines[4:]]) + "\n")
    out = tmp_path / "report"
    assert main(["--trace", str(tmp_path / "bad.jsonl"), "--no-wandb", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "specmd-eval: error: row 3: expert id 9 is outside 0..7 (num_experts 8)"
    assert not out.exists()
    assert (
        main(
            [
                "--trace",
                str(EXAMPLES / "routing_trace.jsonl"),
                "--no-wandb",
                "--prefetches",
                "[router-reuse]",
                "--output-dir",
                str(out),
            ]
        )
        == 2
    )
    assert "no prefetch policy can run on an external trace" in capsys.readouterr().err
    assert not out.exists()


def test_flame_converter_on_a_tiny_stand_in(tmp_path):
    """The converter reads the .pt layout of ../shared/realtraces (made here with 2 windows, 2 MoE layers)."""
    convert = load_script("examples/convert_flame_moe_traces.py")
    root = tmp_path / "src" / "Sample routing traces"
    gen = torch.Generator().manual_seed(0)

    def save(folder: Path, n: int, **meta) -> None:
        folder.mkdir(parents=True)
        ids = torch.stack([torch.randperm(64, generator=gen)[:6] for _ in range(n)])
        torch.save({"indices": ids, "scores": torch.rand(n, 6, generator=gen), **meta}, folder / "x.pt")

    for layer in (2, 3):
        for ordinal in convert.ORDINALS:
            save(root / "Decoder_Batch_0-64" / ordinal / f"Layer_{layer}", 2)
        save(root / "Encoder_Batch_0-32" / f"Layer_{layer}", 8, num_sequences=2, sequence_length=4)
    out = tmp_path / "flame.parquet"
    assert convert.main([str(tmp_path / "src"), str(out), "--encoder-prompt-tokens", "1"]) == 0

    from data_pipelines.routing_trace import read_routing_trace

    trace = read_routing_trace(out)
    m = trace.manifest
    assert m["model"] == {"num_layers": 2, "num_experts": 64, "top_k": 6}
    assert (m["num_sequences"], m["num_decode_tokens"], m["num_prefill_tokens"]) == (4, 2 * 10 + 2 * 3, 2)
    first = torch.load(root / "Decoder_Batch_0-64" / "2nd" / "Layer_3" / "x.pt", weights_only=True)
    row = trace.dataset[1]  # window 0, position 1
    assert row["expert_ids"][1] == first["indices"][0].tolist()
    assert convert.main([str(tmp_path / "nowhere"), str(out)]) == 2
