"""`specmd-harvest`: a working run prints where the harvest is; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk

from data_pipelines import load_harvest
from data_pipelines.cli import main
from specmd_predict.embedded import EMBEDDED_MODEL_DIR


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def tiny_args(model_dir, corpus, root) -> list:
    return ["--model", model_dir, "--dataset", corpus, "--seq-len", 32, "--max-tokens", 256, "--batch-size", 4,
            "--output-root", root, "--progress", "false"]  # fmt: skip


def test_cli_harvests_and_reuses_with_yaml_config(tiny_model_dir, text_corpus, tmp_path, capsys):
    config_file = tmp_path / "harvest.yaml"
    config_file.write_text(yaml.safe_dump({"seq_len": 16, "hidden_layers": [1], "max_tokens": 999}))
    args = [*tiny_args(tiny_model_dir("olmoe"), text_corpus, tmp_path / "out"), "--keep-router-logits"]
    code, out, err = run_cli(["--config", config_file, *args], capsys)  # CLI overrides the file's seq_len, max_tokens
    assert code == 0, err
    path = tmp_path / "out" / out.split("harvest: ")[1].split("\n")[0].rsplit("/", 1)[1]
    h = load_harvest(path)
    assert h.manifest["seq_len"] == 32 and h.manifest["hidden_layers"] == [1] and h.manifest["num_tokens"] == 256
    assert "router_logits" in h.dataset.column_names and "MiB on disk" in out
    code, out_again, _ = run_cli(["--config", config_file, *args], capsys)
    assert code == 0 and out_again == out and load_harvest(path).manifest["created"] == h.manifest["created"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


BAD_INPUTS = {
    "unknown model type": (lambda d, c, t: ["--model", d("llama")], "unsupported model type 'llama'"),
    "missing text column": (
        lambda d, c, t: ["--dataset", write_jsonl(t / "rows.jsonl", [{"content": "x" * 500}])],
        "text column 'text' not found",
    ),
    "empty corpus": (lambda d, c, t: ["--dataset", write_jsonl(t / "short.jsonl", [{"text": "tiny"}])], "empty corpus"),
    "no rows": (lambda d, c, t: ["--dataset", write_jsonl(t / "none.jsonl", [])], "empty corpus"),
    "seq len above max": (lambda d, c, t: ["--seq-len", 128, "--max-tokens", 1024], "above the model's maximum length"),
    "unwritable output": (lambda d, c, t: ["--output-root", t / "a-file" / "sub"], "cannot write to"),
    "hidden layer out of range": (lambda d, c, t: ["--hidden-layers", "[0, 7]"], "out of range"),
    "bad dtype": (lambda d, c, t: ["--dtype", "float8"], "dtype must be one of"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tiny_model_dir, text_corpus, tmp_path, capsys):
    make_args, message = BAD_INPUTS[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a-file").write_text("not a folder")
    root = tmp_path / "out"
    args = [*tiny_args(tiny_model_dir("olmoe"), text_corpus, root), *make_args(tiny_model_dir, text_corpus, inputs)]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    error_lines = [line for line in err.splitlines() if line.startswith("specmd-harvest: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert "Traceback" not in err and out == ""
    assert not root.exists()  # nothing half-written, not even an empty output folder


def test_console_script_exit_code(tmp_path):
    """The installed entry point: exit status 2 and the one-line error on stderr, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "data_pipelines.cli", "--model", tmp_path / "nowhere", "--output-root", tmp_path],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().startswith("specmd-harvest: error: model path") and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(not (EMBEDDED_MODEL_DIR / "config.json").exists(), reason="embedded model not built yet")
def test_console_script_on_the_embedded_defaults(tmp_path):
    """`specmd-harvest` as installed, embedded model and corpus, only fewer tokens than the default."""
    result = subprocess.run(
        [sys.executable, "-m", "data_pipelines.cli", "--max-tokens", "2048", "--num-threads", "1",
         "--output-root", str(tmp_path / "h")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.split("harvest: ")[1].split("\n")[0])
    assert path.parent == tmp_path / "h" and path.name.startswith("embedded-")
    data = load_from_disk(str(path / "data"))
    assert len(data) == 256 * 8 and data.features["hidden"].shape == (8, 128)


def test_default_output_is_our_lines_only(tiny_model_dir, text_corpus, tmp_path):
    """No library warnings or info lines without --verbose, and no bar at all (transformers' "Loading weights"
    included) with --progress false: stderr stays empty, stdout holds our own summary."""
    args = [str(a) for a in tiny_args(tiny_model_dir("olmoe"), text_corpus, tmp_path / "out")]
    run = subprocess.run(
        [sys.executable, "-m", "data_pipelines.cli", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.startswith("harvest: ") and len(run.stdout.splitlines()) == 3
