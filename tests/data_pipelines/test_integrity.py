"""Nothing corrupt is trusted: a damaged harvest is refused by readers with one line naming the file, and
`specmd-harvest` harvests it again instead of reusing it; the cache key follows contents, not mtimes."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from data_pipelines import HarvestConfig, HarvestError, load_harvest
from data_pipelines.cli import main
from data_pipelines.manifest import verify_harvest

SEQ_LEN = 32


def tiny_args(model_dir, corpus, out) -> list[str]:
    return ["--model", str(model_dir), "--dataset", str(corpus), "--seq-len", str(SEQ_LEN), "--max-tokens", "256",
            "--batch-size", "4", "--output-dir", str(out), "--progress", "false"]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tiny_model_dir, text_corpus, tmp_path_factory):
    """(args maker, path) of one finished tiny harvest, copied by each test before damaging it."""
    out = tmp_path_factory.mktemp("finished") / "h"
    assert main(tiny_args(tiny_model_dir("olmoe"), text_corpus, out)) == 0
    return (lambda target: tiny_args(tiny_model_dir("olmoe"), text_corpus, target)), out


def _shard(path):
    return sorted((path / "data").glob("*.arrow"))[0]


def _flip_byte(file, offset=-100):
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        (manifest[section] if field else manifest)[field or key] = value
    (path / "manifest.json").write_text(json.dumps(manifest))


DAMAGES = {
    "deleted shard": (lambda p: _shard(p).unlink(), "data-00000-of-00001.arrow is missing"),
    "truncated shard": (lambda p: os.truncate(_shard(p), 1000), "data-00000-of-00001.arrow does not match"),
    "flipped byte in shard": (lambda p: _flip_byte(_shard(p)), "data-00000-of-00001.arrow does not match"),
    "missing state.json": (lambda p: (p / "data" / "state.json").unlink(), "data/state.json is missing"),
    "edited sequence count": (lambda p: _edit_manifest(p, num_sequences=99), "manifest.json was changed"),
    "edited num_experts": (lambda p: _edit_manifest(p, model__num_experts=64), "manifest.json was changed"),
}


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_damaged_harvest_is_refused_then_harvested_again(case, finished, tmp_path, capsys):
    make_args, original = finished
    damage, message = DAMAGES[case]
    path = tmp_path / "h"
    shutil.copytree(original, path)
    damage(path)
    with pytest.raises(HarvestError, match=message) as info:  # train and eval open harvests this way
        load_harvest(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)

    assert main(make_args(path)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "harvesting it again" in line]) == 1 and message in err[0]
    assert verify_harvest(path)["num_sequences"] == 8  # a fresh, sound harvest, not the damaged one
    assert sorted(p.name for p in tmp_path.iterdir()) == [".h.lock", "h"]  # no temp or old folder left


def test_a_folder_without_its_manifest_is_refused_and_left_alone(finished, tmp_path, capsys):
    make_args, original = finished
    path = tmp_path / "h"
    shutil.copytree(original, path)
    (path / "manifest.json").unlink()
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    assert main(make_args(path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a harvest; refusing to replace it" in err[0]
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--validation-fraction", "0"], "validation_fraction must be in (0, 1)"),
        (["--max-tokens", str(SEQ_LEN)], "at least 2 are needed"),
    ],
)
def test_no_validation_sequence_is_refused_at_harvest(args, message, finished, tmp_path, capsys):
    make_args, _ = finished
    assert main([*make_args(tmp_path / "h"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not any(tmp_path.iterdir())


def test_cache_key_follows_contents_not_mtimes(tiny_model_dir, text_corpus, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("olmoe"), model)
    weights = model / "model.safetensors"
    before = HarvestConfig(model=str(model), dataset=str(text_corpus)).fingerprint()
    os.utime(weights, ns=(1, 1))  # what a fresh clone or a copy does: same bytes, other mtimes
    assert HarvestConfig(model=str(model), dataset=str(text_corpus)).fingerprint() == before
    _flip_byte(weights)  # other weights, same name and size
    os.utime(weights, ns=(1, 1))
    assert HarvestConfig(model=str(model), dataset=str(text_corpus)).fingerprint() != before


def test_damage_after_a_checked_load_is_still_caught(finished, tmp_path):
    """One process hashes a harvest once (ensure_harvest then load_harvest), but any later change re-hashes."""
    _, original = finished
    path = tmp_path / "h"
    shutil.copytree(original, path)
    load_harvest(path)
    load_harvest(path)  # unchanged: no re-hash needed, same answer
    _flip_byte(_shard(path), offset=-200)
    with pytest.raises(HarvestError, match="data-00000-of-00001.arrow does not match"):
        load_harvest(path)


KILLED_HARVEST = """
import os, signal, sys
from data_pipelines import writer
from data_pipelines.cli import main

real_write, calls = writer.ShardWriter.write, []

def write_then_die(self, columns):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-harvest, no cleanup: a real kill -9
    return real_write(self, columns)

writer.ShardWriter.write = write_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_harvest_killed_with_sigkill_leaves_nothing_trusted(finished, tmp_path, capsys):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    make_args, _ = finished
    path = tmp_path / "h"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", KILLED_HARVEST, *make_args(path)], cwd=root, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not path.exists()  # nothing at the target looks finished (the partial folder is hidden)
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".h.partial-")]
    with pytest.raises(HarvestError, match="not a finished harvest"):
        load_harvest(path)
    assert main(make_args(path)) == 0  # the next harvest makes it, and removes the dead process's leftovers
    assert verify_harvest(path)["num_sequences"] == 8 and not partial.exists()
