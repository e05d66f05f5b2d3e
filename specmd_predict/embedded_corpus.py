"""The embedded default corpus: the Python standard library's own source files.

Every machine with Python has it, so the embedded model, the harvest and the tests need no download.
Files are located with `sysconfig` (never copied into the repo) and split into train/validation by a
stable hash of their relative path, so the split is the same on every machine with the same Python.

    from specmd_predict.embedded_corpus import corpus_files, iter_corpus_texts
    texts = list(iter_corpus_texts("validation"))
"""

from __future__ import annotations

import hashlib
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path

VALIDATION_PERCENT = 5  # of files, chosen by hash of the relative path


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _split_of(relative_path: str) -> str:
    bucket = int(hashlib.sha1(relative_path.encode()).hexdigest(), 16) % 100
    return "validation" if bucket < VALIDATION_PERCENT else "train"


def corpus_files(split: str = "train") -> list[Path]:
    """Sorted stdlib `.py` files of one split ("train", "validation" or "all")."""
    if split not in ("train", "validation", "all"):
        raise ValueError(f"split must be 'train', 'validation' or 'all', got {split!r}")
    root = stdlib_root()
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "site-packages" in rel or "dist-packages" in rel:
            continue
        if split == "all" or _split_of(rel) == split:
            files.append(path)
    if not files:
        raise FileNotFoundError(f"no Python source files found under {root}")
    return files


def iter_corpus_texts(split: str = "train", min_chars: int = 200, seed: int | None = None) -> Iterator[str]:
    """Yield the text of each corpus file of `split` (files shorter than `min_chars` skipped), in sorted order, or
    shuffled by `seed` (a harvest's order: sorted order would fill it with a few packages only)."""
    files = corpus_files(split)
    if seed is not None:
        random.Random(seed).shuffle(files)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) >= min_chars:
            yield text


def corpus_prompts(tokenizer, num_tokens: int, count: int) -> list:
    """`count` [1, num_tokens] token-id tensors: the first `num_tokens` tokens of the validation files (text the
    embedded model was trained on the like of: its routing, unlike random ids', is the real one). Benchmarks
    prompt with these."""
    prompts = []
    for text in iter_corpus_texts("validation"):
        ids = tokenizer(text, return_tensors="pt").input_ids[:, :num_tokens]
        if ids.shape[1] == num_tokens:
            prompts.append(ids)
        if len(prompts) == count:
            return prompts
    raise ValueError(f"the embedded corpus has fewer than {count} validation files of {num_tokens}+ tokens")
