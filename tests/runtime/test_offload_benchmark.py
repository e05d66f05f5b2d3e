"""benchmarks/runtime.py's plumbing that needs no GPU: options, the copy-bound floor, the sweep's table and JSON
(with the GPU measurements replaced by fixed rows), and the CPU eviction comparison on the embedded model.

Run: pytest tests/runtime/test_offload_benchmark.py
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from specmd_predict.embedded import EMBEDDED_MODEL_DIR
from tests.project_scripts import load_script


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmarks/runtime.py")


def test_capacities_and_evictions_parse_with_their_defaults(benchmark):
    from runtime.offload import DEFAULT_EVICTION

    sweep = benchmark.parse_args(["--sweep"])
    assert sweep.capacities == (0.05, 0.10, 0.25, 0.90) and sweep.evictions == [DEFAULT_EVICTION]
    assert benchmark.parse_args(["--device", "cpu"]).capacities == (1.0,)
    assert benchmark.parse_args([]).capacities == (0.05,)
    assert benchmark.parse_args(["--capacity", "0.3"]).capacities == (0.3,)
    args = benchmark.parse_args(["--device", "cpu", "--capacities", "0.1,0.5", "--evictions", "lru,fld"])
    assert args.capacities == (0.1, 0.5) and args.evictions == ["lru", "fld"]
    assert benchmark.parse_args(["--eviction", "lfu"]).evictions == ["lfu"]  # the old spelling still works


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--capacities", "0.1,x"], "comma-separated fractions"),
        (["--capacities", "0.1,1.5"], "in (0, 1]"),
        (["--capacity", "0.1", "--capacities", "0.2"], "not both"),
        (["--evictions", "lru,least-stail"], "unknown eviction policies ['least-stail']"),
        (["--evictions", "belady"], "simulator only"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(benchmark, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_on_demand_runs_once_per_capacity_the_others_once_per_eviction(benchmark):
    args = benchmark.parse_args(["--evictions", "lru,fld", "--predictors", "bank/dir"])
    specs = benchmark.row_specs(args, 0.25)
    assert specs == [("on-demand", "lru"), ("offloaded", "lru"), ("offloaded", "fld"), ("bank", "lru"), ("bank", "fld")]


def test_copy_bound_floor_is_the_slower_of_compute_and_copying(benchmark):
    assert benchmark.copy_bound_floor(0.020, 50e6, 50e9) == pytest.approx(0.020)  # 1 ms of copies hide
    assert benchmark.copy_bound_floor(0.020, 5e9, 50e9) == pytest.approx(0.100)  # 100 ms of copies do not
    assert benchmark.copy_bound_floor(None, 5e9, 50e9) == pytest.approx(0.100)  # no all-on-GPU row measured


def fake_gpu(benchmark, monkeypatch, broken: str | None = None) -> list:
    """Fake GPU models for the sweep's flow: the GPU model steps in 20 ms, offloaded ones in 30 ms, every on-demand
    row misses 100 experts of 12.6 MB per token and every offloaded one 2; `broken` eviction fails to build."""
    calls = []

    def offload_variant(model, name, args, capacity, device, eviction=None):
        if eviction == broken:
            raise RuntimeError("planted")
        return (name, capacity, eviction)

    def time_lockstep(models, prompt_ids, new_tokens):
        calls.append(list(models))
        out = {}
        for spec in models:
            name = spec[0]
            row = {"ttft_s": 0.05, "tpot_s": 0.02 if name == "gpu" else 0.03, "cpu_tpot_s": 0.0, "tokens": [1, 2, 3]}
            row["steps_s"] = [row["tpot_s"]] * 3
            if name != "gpu":
                misses = {"on-demand": 100.0, "offloaded": 2.0}[name] * 12.6e6  # missed bytes per decode token
                row["cache"] = {"hit_rate": 0.9, "stall_s_per_token": 1e-3, "bytes_moved_per_token": 2 * misses}
                row["cache"].update(miss_bytes_per_token=misses, host_reads_per_token=16)
            out[spec] = row
        return out

    monkeypatch.setattr(benchmark.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(benchmark.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(benchmark.torch.cuda, "get_device_name", lambda device: "Fake GPU")
    monkeypatch.setattr(benchmark.torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(benchmark, "run_gpu_tests", lambda: {"exit_code": 0, "summary": "8 passed"})
    monkeypatch.setattr(benchmark, "measure_bandwidth", lambda device: 50e9)
    monkeypatch.setattr(benchmark, "olmoe_1b_7b_config", lambda layers: SimpleNamespace(vocab_size=100))
    monkeypatch.setattr(benchmark, "random_prompts", lambda *args: [None, None])
    monkeypatch.setattr(benchmark, "build_model", lambda config, seed, device: object())
    monkeypatch.setattr(benchmark, "offload_variant", offload_variant)
    monkeypatch.setattr(benchmark, "time_lockstep", time_lockstep)
    return calls


def test_sweep_writes_one_table_and_json_with_every_column(benchmark, monkeypatch, tmp_path, capsys):
    """The sweep's flow on fixed measurements: GPU tests, bandwidth, then per capacity the GPU model and every
    variant in lockstep (a warm-up run and a measured one), one row each."""
    calls = fake_gpu(benchmark, monkeypatch)
    out = tmp_path / "sweep.json"
    assert benchmark.main(["--sweep", "--out", str(out)]) == 0
    assert len(calls) == 2 * 4 and all(len(models) == 3 and models[0][0] == "gpu" for models in calls)
    assert [models[1][1] for models in calls[::2]] == [0.05, 0.10, 0.25, 0.90]
    payload = json.loads(out.read_text())
    assert payload["device"] == "Fake GPU" and payload["pinned_h2d_bytes_per_s"] == 50e9
    assert payload["gpu_tests"]["exit_code"] == 0 and {"torch", "transformers", "cuda"} <= set(payload["versions"])
    rows = payload["results"]
    assert len(rows) == 3 * 4 and all(r["tpot_ratio_to_plain"] == pytest.approx(1.5) for r in rows if r["capacity"])
    floors = {(r["variant"], r["capacity"]): r["copy_bound_floor_s"] for r in rows if r["variant"] != "gpu"}
    assert floors[("on-demand", 0.05)] == pytest.approx(100 * 12.6e6 / 50e9)  # 25 ms of copies: copy-bound
    assert floors[("offloaded", 0.05)] == pytest.approx(0.02)  # 0.5 ms of copies could hide behind the 20 ms model
    table = capsys.readouterr().out
    for column in ("TTFT ms", "TPOT ms", "hit rate", "stall ms/tok", "MB moved/tok", "syncs/tok", "floor ms"):
        assert column in table


def test_failing_gpu_tests_fail_the_sweep(benchmark, monkeypatch, tmp_path):
    monkeypatch.setattr(benchmark.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(benchmark.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(benchmark.torch.cuda, "get_device_name", lambda device: "Fake GPU")
    monkeypatch.setattr(benchmark, "run_gpu_tests", lambda: {"exit_code": 1, "summary": "1 failed"})
    monkeypatch.setattr(benchmark, "measure_bandwidth", lambda device: 50e9)
    monkeypatch.setattr(benchmark, "gpu_rows", lambda args, device, bandwidth, on_row=None: [])
    monkeypatch.setattr(benchmark, "print_table", lambda *a: None)
    assert benchmark.main(["--sweep", "--out", str(tmp_path / "sweep.json")]) == 1


def test_a_broken_row_is_kept_with_its_error_and_every_capacity_is_saved_as_it_finishes(
    benchmark, monkeypatch, tmp_path
):
    """The sweep goes on past a variant that raises (kept as {"error"}), saves partial JSON after each capacity,
    and fails."""
    out = tmp_path / "sweep.json"
    saved = []
    calls = fake_gpu(benchmark, monkeypatch, broken="fld")
    real_lockstep = benchmark.time_lockstep

    def time_lockstep(models, prompt_ids, new_tokens):
        saved.append(len(json.loads(out.read_text())["results"]) if os.path.exists(out) else 0)
        return real_lockstep(models, prompt_ids, new_tokens)

    monkeypatch.setattr(benchmark, "time_lockstep", time_lockstep)
    argv = ["--capacities", "0.1,0.5", "--evictions", "lru,fld", "--variants", "gpu,offloaded", "--out", str(out)]
    assert benchmark.main(argv) == 1
    rows = json.loads(out.read_text())["results"]
    assert saved == [0, 0, 3, 3] and len(calls) == 4  # the first capacity's rows were on disk before the second's
    assert [(r["variant"], r["eviction"], r.get("error")) for r in rows] == [
        ("gpu", None, None), ("offloaded", "lru", None), ("offloaded", "fld", "RuntimeError: planted"),
    ] * 2  # fmt: skip
    assert "partial" not in json.loads(out.read_text())


@pytest.mark.skipif(not (EMBEDDED_MODEL_DIR / "config.json").exists(), reason="embedded model not built yet")
def test_cpu_mode_compares_evictions_below_full_capacity_with_identical_tokens(benchmark, tmp_path):
    out = tmp_path / "cpu.json"
    argv = ["--device", "cpu", "--capacities", "0.05,1.0", "--evictions", "lru,least-stale-reverse"]
    argv += ["--variants", "gpu,offloaded", "--new-tokens", "3", "--prompt-tokens", "8", "--warmup-tokens", "2"]
    assert benchmark.main([*argv, "--repeats", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["variant"], r["capacity"], r["eviction"]) for r in rows] == [
        ("plain", None, None),
        ("offloaded", 0.05, "lru"),
        ("offloaded", 0.05, "least-stale-reverse"),
        ("offloaded", 1.0, "lru"),
        ("offloaded", 1.0, "least-stale-reverse"),
    ]
    assert all(r["tokens"] == rows[0]["tokens"] and len(r["tpot_per_repeat_s"]) == 2 for r in rows)
    assert rows[0]["tpot_ratio_to_plain"] == 1.0
    assert all(r["same_tokens_every_repeat"] for r in rows)
    small, full = rows[1]["cache"], rows[3]["cache"]
    assert small["requests"] == 2 * 2 * 8 * 4  # both repeats' decode steps: 2 repeats x 2 steps x 8 layers x top-4
    assert small["bytes_moved_per_token"] == small["bytes_moved"] / 4 and small["hit_rate"] < 1.0
    assert small["misses"] > 0 and full["misses"] == 0 and small["bytes_moved"] > full["bytes_moved"]
