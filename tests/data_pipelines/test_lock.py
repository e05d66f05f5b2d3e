"""One writer per harvest target, `--overwrite` included, with real concurrent processes: both start their
harvest at the same moment (a file barrier), and their writes never overlap; the result is one sound harvest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipelines.manifest import verify_harvest

WRITER = """
import json, os, sys, time
from pathlib import Path
from data_pipelines import HarvestConfig, pipeline

log, barrier, args = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
real_write = pipeline._write

def logged_write(*a, **k):
    with log.open("a") as f:
        f.write(f"start {os.getpid()} {time.time()}\\n")
    time.sleep(1.0)  # widen the window in which a second writer would overlap
    try:
        return real_write(*a, **k)
    finally:
        with log.open("a") as f:
            f.write(f"end {os.getpid()} {time.time()}\\n")

pipeline._write = logged_write
config = HarvestConfig(**args)
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < 2:  # both processes imported everything: start together
    time.sleep(0.01)
pipeline.ensure_harvest(config)
"""


@pytest.mark.slow
def test_two_overwriting_harvests_of_one_target_never_run_at_once(tiny_model_dir, text_corpus, tmp_path):
    target = tmp_path / "h"
    args = dict(model=str(tiny_model_dir("olmoe")), dataset=str(text_corpus), seq_len=32, max_tokens=256,
                batch_size=4, output_dir=str(target), overwrite=True, progress=False, device="cpu")  # fmt: skip
    log, barrier = tmp_path / "log.txt", tmp_path / "barrier"
    barrier.mkdir()
    root = Path(__file__).resolve().parents[2]
    env_code = [sys.executable, "-c", WRITER, str(log), str(barrier), json.dumps(args)]
    procs = [subprocess.Popen(env_code, cwd=root, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    events = [line.split() for line in log.read_text().splitlines()]
    spans = {}
    for kind, pid, t in events:
        spans.setdefault(pid, {})[kind] = float(t)
    assert len(spans) == 2  # both really wrote (overwrite): the second waited for the first, then redid it
    first, second = sorted(spans.values(), key=lambda s: s["start"])
    assert first["end"] <= second["start"]
    assert verify_harvest(target)["num_sequences"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [".h.lock", "barrier", "h", "log.txt"]
