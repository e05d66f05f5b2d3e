"""Where a harvest's text comes from, and how it becomes fixed-length token sequences.

    source = open_text_source(config)            # embedded corpus, Hugging Face dataset, or local files
    for ids_S in source.sequences(tokenizer, seq_len=256, num_sequences=800, validation_fraction=0.1):
        ...
    source.validation_ids                        # ids of the held-out sequences, known once iteration ends

Texts are tokenized in order, joined with EOS (as the embedded model was trained) and cut into rows of
`seq_len` tokens; the last incomplete row is dropped. Validation sequences are always the last ones:
for the embedded corpus they come from its validation files (texts the embedded model never trained on),
for other sources from the tail of the text stream. Hugging Face datasets and local files are streamed,
so a harvest never downloads or caches more text than it uses.
"""

from __future__ import annotations

import glob
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from data_pipelines.config import EMBEDDED_CORPUS_NAME, HarvestConfig, HarvestError, describe_error
from specmd_predict.embedded_corpus import iter_corpus_texts

LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
TEXTS_PER_TOKENIZER_CALL = 16


class TextSource:
    """One text source: `describe()` for the manifest, `sequences()` for the token rows."""

    def __init__(self, description: dict, train_texts: Iterable[str], validation_texts: Iterable[str] | None):
        self.description = description
        self._train_texts = train_texts
        self._validation_texts = validation_texts  # None: validation = tail of the train stream
        self.validation_ids: list[int] = []

    def describe(self) -> dict:
        return dict(self.description)

    def sequences(
        self, tokenizer, seq_len: int, num_sequences: int, validation_fraction: float
    ) -> Iterator[np.ndarray]:
        """Yield int64 token rows [seq_len]; sets `validation_ids` as it goes (fully once exhausted)."""
        num_validation = num_validation_sequences(num_sequences, validation_fraction)
        if self._validation_texts is None:
            count = 0
            for ids_S in pack(self._train_texts, tokenizer, seq_len, num_sequences):
                yield ids_S
                count += 1
            tail = num_validation_sequences(count, validation_fraction)  # the stream may end early
            self.validation_ids = list(range(count - tail, count))
            return
        count = 0
        for ids_S in pack(self._train_texts, tokenizer, seq_len, num_sequences - num_validation):
            yield ids_S
            count += 1
        for ids_S in pack(self._validation_texts, tokenizer, seq_len, num_validation):
            self.validation_ids.append(count)
            yield ids_S
            count += 1


def num_validation_sequences(num_sequences: int, fraction: float) -> int:
    """round(num_sequences x fraction), but at least one when asked for and at least one train sequence remains."""
    if fraction <= 0 or num_sequences < 2:
        return 0
    return min(max(round(num_sequences * fraction), 1), num_sequences - 1)


def pack(texts: Iterable[str], tokenizer, seq_len: int, limit: int) -> Iterator[np.ndarray]:
    """Tokenize `texts` (with the tokenizer's special tokens), join with EOS, yield up to `limit` rows."""
    if limit <= 0:
        return
    eos = tokenizer.eos_token_id
    pending: list[np.ndarray] = []
    num_pending = 0
    produced = 0
    for chunk in _chunks(texts, TEXTS_PER_TOKENIZER_CALL):
        for ids in tokenizer(chunk, add_special_tokens=True, verbose=False)["input_ids"]:
            if eos is not None and (not ids or ids[-1] != eos):
                ids = [*ids, eos]
            pending.append(np.asarray(ids, dtype=np.int64))
            num_pending += len(ids)
        if num_pending < seq_len:
            continue
        stream = np.concatenate(pending)
        num_rows = min(len(stream) // seq_len, limit - produced)
        for row in range(num_rows):
            yield stream[row * seq_len : (row + 1) * seq_len]
        produced += num_rows
        if produced >= limit:
            return
        pending, num_pending = [stream[num_rows * seq_len :]], len(stream) - num_rows * seq_len


def open_text_source(config: HarvestConfig) -> TextSource:
    """Open (and check) the text source `config` names; errors are one-line `HarvestError`s."""
    if config.dataset == EMBEDDED_CORPUS_NAME:
        return _embedded_source(config.seed)
    files = _local_files(config.dataset)
    if files is not None:
        return _local_source(files, config)
    return _hub_source(config)


def _embedded_source(seed: int) -> TextSource:
    description = {
        "source": "embedded",
        "name": "Python standard library .py files (specmd_predict.embedded_corpus)",
        "file_order": f"shuffled with seed {seed}",
        "validation_rule": "train sequences from the corpus's train files, validation sequences from its "
        "validation files",
    }
    return TextSource(description, iter_corpus_texts("train", seed=seed), iter_corpus_texts("validation", seed=seed))


def _local_files(spec: str) -> list[Path] | None:
    """The local files `spec` names (file, folder or glob), or None when it is not a local path."""
    if any(c in spec for c in "*?["):
        files = [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
        if not files:
            raise HarvestError(f"no files match {spec!r}")
    elif Path(spec).is_file():
        files = [Path(spec)]
    elif Path(spec).is_dir():
        files = sorted(p for p in Path(spec).rglob("*") if p.is_file() and p.suffix in LOCAL_BUILDERS)
        if not files:
            raise HarvestError(f"no {'/'.join(LOCAL_BUILDERS)} files in folder {spec}")
    else:
        return None
    suffixes = {p.suffix for p in files}
    if not suffixes <= set(LOCAL_BUILDERS):
        raise HarvestError(
            f"unsupported text file type {sorted(suffixes - set(LOCAL_BUILDERS))}: use .txt, .jsonl, .json or .parquet"
        )
    builders = {LOCAL_BUILDERS[s] for s in suffixes}
    if len(builders) > 1:
        raise HarvestError(f"mixed file types in {spec!r} ({', '.join(sorted(suffixes))}): use one kind")
    return files


def _local_source(files: list[Path], config: HarvestConfig) -> TextSource:
    from datasets import load_dataset

    builder = LOCAL_BUILDERS[files[0].suffix]
    # A .txt file is one document (not one row per line); its text column is always "text".
    kwargs = {"sample_by": "document"} if builder == "text" else {}
    column = "text" if builder == "text" else config.text_column
    if all(p.stat().st_size == 0 for p in files):
        raise HarvestError(f"empty corpus: the files of {config.dataset} are empty")
    try:
        stream = load_dataset(builder, data_files=[str(p) for p in files], split="train", streaming=True, **kwargs)
    except StopIteration as err:  # datasets' json reader raises it for files with no rows
        raise HarvestError(f"empty corpus: {config.dataset} has no rows") from err
    except Exception as err:  # datasets raises many types; the user needs the one line
        raise HarvestError(f"cannot read {config.dataset}: {describe_error(err)}") from err
    description = {
        "source": "local",
        "files": [str(p.resolve()) for p in files],
        "builder": builder,
        "text_column": column,
        "validation_rule": "the last validation_fraction of the sequences (tail of the text stream)",
    }
    return TextSource(description, _column_texts(stream, column, config.dataset), None)


def _hub_source(config: HarvestConfig) -> TextSource:
    from datasets import load_dataset

    try:
        stream = load_dataset(config.dataset, config.dataset_config, split=config.split, streaming=True)
    except Exception as err:
        raise HarvestError(f"cannot load dataset {config.dataset!r}: {describe_error(err)}") from err
    description = {
        "source": "huggingface",
        "name": config.dataset,
        "config": config.dataset_config,
        "split": config.split,
        "text_column": config.text_column,
        "validation_rule": "the last validation_fraction of the sequences (tail of the text stream)",
    }
    return TextSource(description, _column_texts(stream, config.text_column, config.dataset), None)


def _column_texts(stream, column: str, where: str) -> Iterator[str]:
    """The texts of `column`, checking the column on the first row so a wrong name fails before any output."""
    rows = iter(stream)
    try:
        first = next(rows, None)
    except StopIteration:  # datasets' json reader raises it for a file with no rows
        first = None
    except Exception as err:
        raise HarvestError(f"cannot read {where}: {describe_error(err)}") from err
    if first is None:
        raise HarvestError(f"empty corpus: {where} has no rows")
    if column not in first:
        raise HarvestError(f"text column {column!r} not found in {where}; columns: {', '.join(map(str, first))}")
    return _texts_of(first, rows, column)


def _texts_of(first: dict, rows: Iterator[dict], column: str) -> Iterator[str]:
    for example in itertools.chain([first], rows):
        text = example[column]
        if text is None:
            continue
        if not isinstance(text, str):
            raise HarvestError(f"text column {column!r} holds {type(text).__name__}, not text")
        if text:
            yield text


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
