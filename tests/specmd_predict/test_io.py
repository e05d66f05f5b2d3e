"""specmd_predict.io: atomic files and folders (nothing half-written, umask permissions), checksums, git commit."""

from __future__ import annotations

import os
import stat

import pytest

from specmd_predict.io import (
    ChecksumError,
    atomic_dir,
    atomic_file,
    atomic_write_text,
    folder_checksums,
    git_commit,
    target_lock,
    verify_checksums,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_file_replaces_only_on_success(tmp_path, umask_022):
    path = atomic_write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temp file left
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o644  # umask, not mkstemp's 0600


def test_atomic_dir_swaps_whole_folders(tmp_path, umask_022):
    target = tmp_path / "bank"
    with atomic_dir(target) as tmp:
        (tmp / "w").write_text("1")
    assert _mode(target) == 0o755  # umask, not mkdtemp's 0700
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "w").write_text("2")
        raise RuntimeError("killed")
    assert (target / "w").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["v"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank"]


def test_checksums_name_the_damaged_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x00" * 100)
    (tmp_path / "b.bin").write_bytes(b"\x01" * 100)
    sums = folder_checksums(tmp_path, ["a.bin", "b.bin"])
    verify_checksums(tmp_path, sums)
    data = bytearray((tmp_path / "b.bin").read_bytes())
    data[50] ^= 0x01
    (tmp_path / "b.bin").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"b\.bin does not match its recorded checksum"):
        verify_checksums(tmp_path, sums)
    (tmp_path / "a.bin").unlink()
    with pytest.raises(ChecksumError, match=r"a\.bin is missing"):
        verify_checksums(tmp_path, sums)


def test_lock_is_exclusive_and_its_file_stays(tmp_path):
    from filelock import Timeout

    target = tmp_path / "harvest"
    with target_lock(target):
        with pytest.raises(Timeout):
            target_lock(target, timeout=0.05).acquire()
    assert (tmp_path / ".harvest.lock").exists()  # never unlinked: a waiter may hold the same inode


def test_git_commit_is_a_sha_or_none():
    commit = git_commit()
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)


def test_fresh_output_dir_holds_one_complete_run(tmp_path):
    from specmd_predict.io import fresh_output_dir

    out, said = tmp_path / "run", []
    with fresh_output_dir(out, say=said.append) as tmp:
        (tmp / "a.csv").write_text("first")
    with pytest.raises(RuntimeError), fresh_output_dir(out, say=said.append) as tmp:
        (tmp / "b.csv").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["a.csv"] and said == []  # the failed run changed nothing
    with fresh_output_dir(out, say=said.append) as tmp:
        (tmp / "b.csv").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.csv"]
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert (aside / "a.csv").read_text() == "first" and len(said) == 1 and str(aside) in said[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".run.lock", aside.name, "run"])


def test_both_checksum_algorithms_and_bare_sha256(tmp_path):
    import hashlib

    from specmd_predict.io import file_checksum

    (tmp_path / "d.bin").write_bytes(b"expert ids" * 1000)
    sha = hashlib.sha256(b"expert ids" * 1000).hexdigest()
    assert file_checksum(tmp_path / "d.bin") == f"sha256:{sha}"
    fast = folder_checksums(tmp_path, ["d.bin"], algorithm="xxh3_128")
    assert fast["d.bin"].startswith("xxh3_128:") and len(fast["d.bin"]) == len("xxh3_128:") + 32
    verify_checksums(tmp_path, fast)
    verify_checksums(tmp_path, {"d.bin": sha})  # a bare hex digest is a sha256
    with pytest.raises(ChecksumError, match="does not match"):
        verify_checksums(tmp_path, {"d.bin": "xxh3_128:" + "0" * 32})
    with pytest.raises(ValueError, match="unknown checksum algorithm"):
        file_checksum(tmp_path / "d.bin", "md5")


def test_versions_come_from_package_metadata():
    import platform

    import torch

    from specmd_predict.io import versions

    found = versions("torch", "no-such-package-xyz")
    assert found == {"python": platform.python_version(), "torch": torch.__version__, "no-such-package-xyz": None}
