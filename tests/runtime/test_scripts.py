"""examples/generate.py and benchmarks/runtime.py run as documented (in-process, small settings).

Run: pytest tests/runtime/test_scripts.py
"""

from __future__ import annotations

import pytest
import torch

from specmd_predict.embedded import EMBEDDED_MODEL_DIR
from tests.project_scripts import load_script

needs_embedded = pytest.mark.skipif(
    not (EMBEDDED_MODEL_DIR / "config.json").exists(), reason="embedded model not built yet"
)


@needs_embedded
def test_example_generates_with_offloading_and_prints_stats(capsys):
    example = load_script("examples/generate.py")
    assert example.main(["--max-new-tokens", "4", "--capacity", "0.1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    from runtime.offload import DEFAULT_EVICTION

    assert "def fibonacci" in out and "hit rate" in out and f"{DEFAULT_EVICTION} eviction" in out


@needs_embedded
def test_example_reports_bad_input_without_a_traceback(capsys):
    example = load_script("examples/generate.py")
    assert example.main(["--capacity", "1e-6", "--device", "cpu"]) == 2
    assert "error: capacity" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_benchmark_without_a_gpu_says_so_and_exits_zero(capsys):
    benchmark = load_script("benchmarks/runtime.py")
    assert benchmark.main(["--layers", "2"]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out


def test_benchmark_rejects_unknown_variants():
    benchmark = load_script("benchmarks/runtime.py")
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--variants", "gpu,fast"])


@pytest.mark.parametrize(
    "argv",
    [["--sweep", "--device", "cpu"], ["--variants", "bank"], ["--capacity", "1.5"], ["--horizon", "0"]],
)
def test_benchmark_rejects_inconsistent_options(argv, capsys):
    benchmark = load_script("benchmarks/runtime.py")
    with pytest.raises(SystemExit) as exit_info:
        benchmark.parse_args(argv)
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err


def test_benchmark_sweep_arguments_parse_without_a_gpu():
    benchmark = load_script("benchmarks/runtime.py")
    args = benchmark.parse_args(["--sweep", "--predictors", "some/bank", "--horizon", "2"])
    assert args.sweep and args.variants == ["gpu", "on-demand", "offloaded", "bank"] and args.horizon == 2
    assert benchmark.SWEEP_CAPACITIES == (0.05, 0.10, 0.25, 0.90)


@needs_embedded
def test_benchmark_on_cpu_compares_plain_and_offloaded_at_full_capacity(tmp_path, capsys):
    import json

    benchmark = load_script("benchmarks/runtime.py")
    out = tmp_path / "runtime.json"
    argv = ["--device", "cpu", "--new-tokens", "3", "--prompt-tokens", "8", "--warmup-tokens", "2", "--repeats", "1"]
    assert benchmark.main([*argv, "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    rows = {row["variant"]: row for row in payload["results"]}
    assert set(rows) == {"plain", "on-demand", "offloaded"} and payload["device"].startswith("cpu")
    assert rows["offloaded"]["capacity"] == 1.0 and rows["offloaded"]["tokens"] == rows["plain"]["tokens"]
    assert rows["on-demand"]["cache"]["evictions"] == 0  # capacity 1.0: every expert has a slot
    assert "x base" in capsys.readouterr().out
