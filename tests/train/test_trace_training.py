"""`specmd-train --trace` end to end on hand-made routing traces (JSONL and Parquet): the routing-only kind
trains, its bank records the trace's identity, and `specmd-eval --trace` replays with it as the learned
prefetcher, beating no prefetch; other kinds, a bank of other shapes and conflicting inputs are one line.

Run: pytest tests/train/test_trace_training.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipelines.routing_trace import TRACE_MODEL_TYPE, trace_checksum
from eval.cli import main as eval_main
from specmd_predict.predictors import read_bank_config
from train.cli import main as train_main

L, E, K = 4, 16, 2


def chained_rows(num_experts: int = E, num_sequences: int = 12, tokens: int = 24, seed: int = 0) -> list[dict]:
    """Layer 0 random, layer j uses (e + j) mod E for each expert e of layer 0: learnable from routing alone."""
    rng = np.random.default_rng(seed)
    rows = []
    for sequence in range(num_sequences):
        for position in range(tokens):
            first = rng.choice(num_experts, K, replace=False)
            phase = "prefill" if position < 4 else "decode"
            for layer in range(L):
                ids = ((first + layer) % num_experts).tolist()
                rows.append(dict(sequence=sequence, position=position, phase=phase, layer=layer, expert_ids=ids))
    return rows


def write_jsonl(rows: list[dict], path: Path, num_experts: int = E) -> Path:
    path.write_text("".join(json.dumps(row | {"num_experts": num_experts}) + "\n" for row in rows))
    return path


def write_parquet(rows: list[dict], path: Path) -> Path:
    pq.write_table(pa.table({name: [row[name] for row in rows] for name in rows[0]}), path)
    return path


def train_on(trace: Path, tmp_path: Path, *extra: str) -> int:
    return train_main(
        ["--trace", str(trace), "--no-wandb", "--progress", "false", "--output-dir", str(tmp_path / "runs")]
        + ["--max-epochs", "12", "--batch-size", "64", "--lr", "0.05", "--horizon", "2", *extra]
    )


def replay(trace: Path, bank: Path, out: Path, *extra: str) -> int:
    return eval_main(
        ["--trace", str(trace), "--banks", f"[{bank}]", "--no-wandb", "--progress", "false", "--output-dir", str(out)]
        + ["--capacities", "[0.25]", "--evictions", "[lru, least-stale]", *extra]
    )


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_routing_bank_trained_on_a_trace_prefetches_better_than_none(fmt, tmp_path):
    rows = chained_rows()
    trace = write_jsonl(rows, tmp_path / "t.jsonl") if fmt == "jsonl" else write_parquet(rows, tmp_path / "t.parquet")
    bank = tmp_path / "bank"
    extra = ["--num-experts", str(E)] if fmt == "parquet" else []  # the Parquet file has no num_experts column
    assert train_on(trace, tmp_path, "--bank-dir", str(bank), *extra) == 0
    config = read_bank_config(bank)
    identity = config["identity"]
    assert config["kind"] == "routing" and identity["model_type"] == TRACE_MODEL_TYPE
    assert (identity["num_layers"], identity["num_experts"], identity["top_k"]) == (L, E, K)
    assert identity["router_fingerprint"] == trace_checksum(trace)
    assert config["extra"]["trace"]["validation_sequence_ids"] == [11]  # the last 10% of 12 sequences: one

    # replay a fresh trace with the same structure (other draws): the bank has not seen it
    fresh = write_jsonl(chained_rows(seed=1, num_sequences=4), tmp_path / "fresh.jsonl")
    out = tmp_path / "report"
    assert replay(fresh, bank, out) == 0
    cache = json.loads((out / "cache.json").read_text())["rows"]
    misses = {(r["prefetch"], r["eviction"]): r["misses"] for r in cache}
    for eviction in ("lru", "least-stale"):
        assert misses["predictor", eviction] < 0.7 * misses["none", eviction], misses
    metrics = {(r["predictor"], r["horizon"]): r for r in _csv(out / "metrics.csv")}
    assert float(metrics["bank", "1"]["recall@2"]) > float(metrics["frequency (this trace)", "1"]["recall@2"]) + 0.2


def _csv(path: Path) -> list[dict]:
    import csv

    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_hidden_state_kinds_and_conflicting_inputs_are_one_line(tmp_path, capsys):
    trace = write_jsonl(chained_rows(num_sequences=3, tokens=4), tmp_path / "t.jsonl")
    assert train_on(trace, tmp_path, "--kind", "lowrank") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "kind 'lowrank' predicts from router inputs" in err and "--kind routing" in err
    assert train_on(trace, tmp_path, "--harvest-path", str(tmp_path)) == 2
    assert "either --harvest-path or --trace" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(trace.read_text().replace('"layer": 3', '"layer": 5', 1))
    assert train_on(bad, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("specmd-train: error: row ") and "layer gap" in err
    assert not (tmp_path / "runs").exists()  # nothing written on bad input


def test_a_bank_for_other_shapes_is_one_line_and_writes_nothing(tmp_path, capsys):
    trace = write_jsonl(chained_rows(num_sequences=3, tokens=6), tmp_path / "t.jsonl")
    bank = tmp_path / "bank"
    assert train_on(trace, tmp_path, "--bank-dir", str(bank), "--max-epochs", "1") == 0
    other = write_jsonl(chained_rows(num_experts=2 * E, num_sequences=2, tokens=4), tmp_path / "o.jsonl", 2 * E)
    capsys.readouterr()
    out = tmp_path / "report"
    assert replay(other, bank, out) == 2
    err = capsys.readouterr().err.strip()
    expected = f"this routing bank {bank} does not fit the trace o.jsonl: num_experts 16 vs the trace's 32"
    assert err == f"specmd-eval: error: {expected}"
    assert not out.exists()


def test_the_example_trace_trains_and_replays_with_every_policy_and_the_routing_predictor(tmp_path):
    """examples/routing_trace.jsonl (2 sequences: one trains, one validates) -> a routing bank -> every
    history-only eviction policy with none and the routing-only predictor's prefetch."""
    from eval.cache_benchmark import DEFAULT_EVICTIONS

    example = Path(__file__).resolve().parents[2] / "examples" / "routing_trace.jsonl"
    bank = tmp_path / "bank"
    assert train_on(example, tmp_path, "--bank-dir", str(bank), "--horizon", "1", "--max-epochs", "1") == 0
    out = tmp_path / "report"
    args = ["--capacities", "[0.5]", "--evictions", f"[{', '.join(DEFAULT_EVICTIONS)}]"]
    assert replay(example, bank, out, *args) == 0
    rows = json.loads((out / "cache.json").read_text())["rows"]
    assert {(r["eviction"], r["prefetch"]) for r in rows} == {
        (e, p) for e in (*DEFAULT_EVICTIONS, "belady") for p in ("none", "predictor")
    }
    assert all(r["prefetches_issued"] > 0 for r in rows if r["prefetch"] == "predictor")
