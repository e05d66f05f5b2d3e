"""Data-parallel harvest: 2 CPU processes (gloo) through `specmd-harvest --nproc 2` give the single-process
rows; a rank that dies fails the harvest with one line and nothing finished; bad launches are one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from data_pipelines import HarvestConfig, harvest, load_harvest
from data_pipelines.cli import main
from data_pipelines.distributed import Ranks
from data_pipelines.launch import LaunchError, split_launch_options

REPO_ROOT = Path(__file__).resolve().parents[2]
SEQ_LEN = 32


def harvest_args(model_dir: Path, corpus: Path, output: Path, max_tokens: int = SEQ_LEN * 24, batch_size: int = 4):
    return ["--model", str(model_dir), "--dataset", str(corpus), "--seq-len", str(SEQ_LEN), "--max-tokens",
            str(max_tokens), "--batch-size", str(batch_size), "--device", "cpu", "--validation-fraction", "0.25",
            "--output-dir", str(output), "--progress", "false"]  # fmt: skip


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "data_pipelines.cli", *args], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip


def test_shares_are_contiguous_disjoint_and_cover_every_batch():
    for world_size in (1, 2, 3, 7):
        for num_batches in range(world_size, 30):
            shares = [Ranks(rank, world_size).share(num_batches) for rank in range(world_size)]
            assert [i for share in shares for i in share] == list(range(num_batches))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.slow
def test_two_processes_give_the_rows_of_one(tiny_model_dir, text_corpus, tmp_path):
    model_dir = tiny_model_dir("olmoe")
    args = harvest_args(model_dir, text_corpus, tmp_path / "two")
    proc = run_cli(["--nproc", "2", *args])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    single = HarvestConfig(model=str(model_dir), dataset=str(text_corpus), seq_len=SEQ_LEN, max_tokens=SEQ_LEN * 24,
                           batch_size=4, device="cpu", validation_fraction=0.25, output_dir=str(tmp_path / "one"),
                           progress=False)  # fmt: skip
    one, two = load_harvest(harvest(single)), load_harvest(tmp_path / "two")
    assert two.manifest["args"]["num_processes"] == 2 and one.manifest["args"]["num_processes"] == 1
    for key in ("num_tokens", "num_sequences", "validation_sequence_ids", "fingerprint", "columns", "data_bytes"):
        assert one.manifest[key] == two.manifest[key], key
    rows_one, rows_two = (h.dataset.with_format("numpy")[:] for h in (one, two))
    order_one, order_two = (np.lexsort((r["position"], r["sequence_id"])) for r in (rows_one, rows_two))
    for name in rows_one:  # the same rows, order aside (bit for bit: each rank ran the same batches)
        assert np.array_equal(rows_one[name][order_one], rows_two[name][order_two]), name
    assert len(two.validation) == len(one.validation) > 0
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))  # lock files stay by design
    assert left == ["one", "two"]  # no temp or rank folders left
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["data", "manifest.json"]


@pytest.mark.slow
def test_a_dead_rank_fails_the_harvest_with_one_line(tiny_model_dir, text_corpus, tmp_path):
    # batches of one sequence: rank 1 is still harvesting (or starting) when it is killed
    args = harvest_args(tiny_model_dir("olmoe"), text_corpus, tmp_path / "out", max_tokens=SEQ_LEN * 200, batch_size=1)
    proc = run_cli(["--nproc", "2", *args])
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == "1" and child.environ().get("WORLD_SIZE") == "2":
                    child.kill()
                    killed = child.pid
                    break
            except psutil.Error:
                continue
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert killed is not None, "rank 1 never started"
    assert proc.returncode == 1
    assert err.strip().splitlines() == ["specmd-harvest: error: rank 1 was killed by SIGKILL; the harvest failed and "
                                        "left no finished output"]  # fmt: skip
    assert not (tmp_path / "out").exists()  # a temp folder may be left, hidden; the next harvest removes it
    assert all(p.name.startswith(".out.") for p in tmp_path.iterdir())  # the lock, maybe a hidden temp folder


def test_more_processes_than_batches_is_one_line(tiny_model_dir, text_corpus, tmp_path, capsys):
    args = harvest_args(tiny_model_dir("olmoe"), text_corpus, tmp_path / "out", max_tokens=SEQ_LEN * 8)
    assert main(["--nproc", "3", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["specmd-harvest: error: 3 processes is more than the data: 8 sequences make 2 batch(es) of 4; "
                   "use at most 2 processes, a smaller batch_size or more max_tokens"]  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_unreachable_rendezvous_is_one_line(tiny_model_dir, text_corpus, tmp_path):
    args = harvest_args(tiny_model_dir("olmoe"), text_corpus, tmp_path / "out")
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never routed
    proc = run_cli(["--nproc", "1", "--nnodes", "2", "--rdzv-endpoint", "192.0.2.1:29400", "--rdzv-timeout", "2",
                    *args])  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("specmd-harvest: error: rendezvous 192.0.2.1:29400 unreachable")
    assert not (tmp_path / "out").exists()


def test_launch_options_are_checked():
    options, rest = split_launch_options(["--nproc", "2", "--max-tokens", "64", "--rdzv_endpoint=h:1", "--nnodes=2"])
    assert options == {"nproc": 2, "rdzv_endpoint": "h:1", "nnodes": 2} and rest == ["--max-tokens", "64"]
    with pytest.raises(LaunchError, match="--nproc must be int"):
        split_launch_options(["--nproc", "two"])
    with pytest.raises(LaunchError, match="--nproc must be at least 1"):
        split_launch_options(["--nproc=0"])
    with pytest.raises(LaunchError, match="needs --rdzv-endpoint"):
        split_launch_options(["--nnodes", "2"])
