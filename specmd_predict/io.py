"""The project's file helpers: atomic writes of files and folders, one lock per target, checksums, git commit
and library versions (what a result records about how it was made).

    from specmd_predict.io import atomic_write_text, atomic_dir, target_lock, sha256_file, git_commit, versions
    atomic_write_text(out / "run.json", json.dumps(info))      # temp file beside it, then os.replace
    with atomic_dir(bank_path) as tmp:                          # hidden temp folder, renamed onto bank_path
        save_file(tensors, tmp / "predictors.safetensors")      #   only when the block ends without error
    with target_lock(harvest_path):                             # filelock on a hidden sibling `.<name>.lock`
        ...
    checksums = folder_checksums(folder, ["a.arrow", "state.json"]); verify_checksums(folder, checksums)
    folder_checksums(folder, names, algorithm="xxh3_128")      # {"name": "xxh3_128:<hex>"}: for big data files

Why one module: an interrupted run must never leave a file or folder that looks complete (write to a
temp name, rename last), and readers must never trust a file whose bytes changed since it was written
(a checksum recorded by the writer, checked by every reader: sha256, or xxhash's xxh3_128 for big data
files, the hash `datasets` fingerprints with, several times faster). Temp names start with "." and contain ".tmp-"
so that folder scans skip them. Files and folders are created with the process umask (not mkstemp's
0600 / mkdtemp's 0700), so other users can read results as they can any other file.
"""

from __future__ import annotations

import hashlib
import os
import platform
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from filelock import FileLock

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMP_MARK = ".tmp-"  # in every temp name this module makes


class ChecksumError(ValueError):
    """A file is missing, or its bytes differ from the checksum recorded when it was written."""


def temp_sibling(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """A hidden, unique name beside `path`: `.<name>.<kind>-<pid>-<random>` (never an existing file)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    """Hidden files and folders, our temp names included: a scan for results must skip them."""
    return name.startswith(".")


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temp file beside `path` for writing; it replaces `path` only if the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, mode.replace("w", "x"), **open_kwargs) as handle:  # "x": umask permissions, never clobbers
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path, "wb") as handle:
        handle.write(data)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden temp folder beside `path`; on success it is renamed onto `path`.

    An existing `path` is swapped aside first and removed after the rename, so at every instant `path` is
    either the old complete folder or the new complete one. On error the temp folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.mkdir()  # umask permissions (mkdtemp would give 0700)
    try:
        yield tmp
        apply_umask(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def apply_umask(folder: Path) -> None:
    """Give every file under `folder` the permissions a plain `open` would: some writers (safetensors) make
    0600 files, which other users of a shared results folder cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    for file in Path(folder).rglob("*"):
        if file.is_file() and not file.is_symlink():
            executable = file.stat().st_mode & 0o111
            file.chmod((0o777 if executable else 0o666) & ~mask)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename folder `src` onto `dst`; an existing `dst` is moved aside first and then deleted."""
    if dst.exists():
        old = temp_sibling(dst, "old")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def move_aside(path: str | os.PathLike) -> Path:
    """Rename an earlier run's folder to `<name>.old-<UTC time>` beside it (kept, not deleted); return that."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.old-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.old-{stamp}-{n}")
    os.replace(path, aside)
    return aside


@contextmanager
def fresh_output_dir(path: str | os.PathLike, say: Callable[[str], object] = print) -> Iterator[Path]:
    """A run's output folder that only ever holds one complete run.

    Locked for the block; the block writes into a hidden temp folder that becomes `path` only when it ends
    without error (a killed run leaves no folder that looks finished). An earlier run already at `path` is
    then moved aside whole (and `say` is told where), never mixed with the new files; a failed run leaves
    it where it was.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output path {path} exists and is not a folder")
    with target_lock(path):
        tmp = temp_sibling(path)
        tmp.mkdir()
        try:
            yield tmp
            apply_umask(tmp)
            if path.is_dir() and any(path.iterdir()):
                say(f"moved the earlier run in {path} aside to {move_aside(path)}")
            elif path.is_dir():
                path.rmdir()
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def target_lock(target: str | os.PathLike, timeout: float = -1) -> FileLock:
    """An exclusive inter-process lock for writing `target` (a file or folder), held on `.<name>.lock` beside it.

    filelock never unlinks a lock file another process may be waiting on, so two writers (with or without
    --overwrite) can never work on one target at once. Use as a context manager; timeout -1 waits forever.
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks (hashlib.file_digest)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@lru_cache(maxsize=256)
def _cached_sha256(resolved: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    return sha256_file(resolved)


def content_sha256(path: str | os.PathLike) -> str:
    """sha256 of a (possibly large) file, computed once per process per (file, size, mtime, ctime, inode).

    A file in the Hugging Face hub cache is a link to `blobs/<sha256>` (huggingface_hub names LFS blobs by
    their sha256): that name is used and nothing is read.
    """
    resolved = Path(path).resolve()
    name = resolved.name
    if resolved.parent.name == "blobs" and len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return name
    stat = resolved.stat()
    return _cached_sha256(str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """`<algorithm>:<hex digest>` of a file: sha256, or xxh3_128 (xxhash, a dependency of `datasets`)."""
    if algorithm == "sha256":
        return f"sha256:{sha256_file(path)}"
    if algorithm != "xxh3_128":
        raise ValueError(f"unknown checksum algorithm {algorithm!r}; use sha256 or xxh3_128")
    import xxhash  # imported here: the runtime, which never checks harvests, does not need it

    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * 2**20):
            digest.update(chunk)
    return f"xxh3_128:{digest.hexdigest()}"


def folder_checksums(folder: str | os.PathLike, names: Iterable[str], algorithm: str = "sha256") -> dict[str, str]:
    """{relative name: "<algorithm>:<hex>"} for the files `names` under `folder`."""
    folder = Path(folder)
    return {name: file_checksum(folder / name, algorithm) for name in sorted(names)}


def verify_checksums(folder: str | os.PathLike, checksums: dict[str, str], what: str = "") -> None:
    """Raise ChecksumError naming the first file under `folder` that is missing or whose checksum differs.

    A recorded value is "<algorithm>:<hex>"; a bare hex digest is a sha256."""
    folder = Path(folder)
    label = f"{what} " if what else ""
    for name, expected in sorted(checksums.items()):
        file = folder / name
        if not file.is_file():
            raise ChecksumError(f"{label}{folder} is damaged: {name} is missing")
        algorithm, _, digest = expected.rpartition(":")
        if file_checksum(file, algorithm or "sha256") != f"{algorithm or 'sha256'}:{digest}":
            raise ChecksumError(f"{label}{folder} is damaged: {name} does not match its recorded checksum")


def versions(*packages: str) -> dict[str, str | None]:
    """Python's and the installed `packages`' versions (from their metadata, nothing imported), to record
    next to a result."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{name: installed(name) for name in packages}}


def git_commit() -> str | None:
    """HEAD of the project's git checkout, or None when installed from a wheel or git is missing."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
