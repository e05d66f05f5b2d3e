"""The cache-benchmark grid and its reports (eval/cache_benchmark.py, eval/report.py).

pytest tests/eval/test_cache_benchmark.py
"""

from __future__ import annotations

import csv
import json

import pytest
from rich.console import Console

from eval.cache_benchmark import run_cache_benchmark
from eval.trace import Trace


def tiny_trace():
    return Trace.synthetic(num_sequences=2, prompt_tokens=4, decode_tokens=12, num_layers=4, num_experts=8, top_k=2)


def test_grid_reports_and_belady_column(tmp_path):
    console = Console(record=True, width=200)
    out = run_cache_benchmark(
        tiny_trace(),
        tmp_path,
        evictions=["lru", "least-stale"],
        capacities=[0.01, 0.25, 0.5],
        hardware="h100-pcie",
        shape="olmoe-1b-7b",
        console=console,
        progress=False,
    )
    rows = out["rows"]
    assert {r["eviction"] for r in rows} == {"lru", "least-stale", "belady"}  # Belady is always added
    assert {r["capacity_fraction"] for r in rows} == {0.25, 0.5}  # 1% of 32 experts < top-2: skipped, noted
    assert any("capacity 0.01" in note for note in out["skipped"])
    assert any("router-reuse" in note for note in out["skipped"])  # no predictor given
    for r in rows:
        assert r["hit_rate"] <= r["belady_hit_rate"] + 1e-12
        assert r["tpot_s"] > 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cache.csv", "cache.json", "hit_rate_vs_capacity.png", "layer_collision_rate.png"]
    with (tmp_path / "cache.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    payload = json.loads((tmp_path / "cache.json").read_text())
    assert len(payload["per_layer"][0]["layer_collision_rate"]) == 4
    text = console.export_text()
    assert "Belady" in text and "least-stale" in text and "skipped" in text


def test_grid_errors():
    with pytest.raises(ValueError, match="Did you mean 'lru'"):
        run_cache_benchmark(tiny_trace(), evictions=["lur"], progress=False)
    with pytest.raises(ValueError, match="no configuration could run"):
        run_cache_benchmark(
            tiny_trace(), evictions=["lru"], capacities=[0.01], progress=False, console=Console(quiet=True)
        )


@pytest.mark.slow
def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = run_cache_benchmark(
        tiny_trace(),
        tmp_path / "out",
        evictions=["lru"],
        capacities=[0.5],
        wandb=True,
        progress=False,
        console=Console(record=True),
    )
    assert out["rows"]
    assert list((tmp_path / "out").glob("wandb/offline-run-*"))
