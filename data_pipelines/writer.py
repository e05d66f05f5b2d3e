"""Write harvested rows straight into a `Dataset.save_to_disk` folder, batch by batch, with bounded memory.

    features = harvest_features(num_layers=8, top_k=4, num_experts=32, hidden_size=128, num_hidden_layers=8)
    with ShardWriter(folder, features, fingerprint="ab12cd34") as writer:
        writer.write(columns)          # dict of numpy arrays, one entry per token (see harvest_features)
    datasets.load_from_disk(folder)    # opens it

Each batch becomes one Arrow record batch appended to the current shard file; a new shard starts past
`shard_bytes`. Nothing is ever copied: at the end the shards are renamed `data-0000i-of-0000n.arrow` and
the two JSON files `save_to_disk` writes (state.json, dataset_info.json) are written the same way, so a
64 KB/token harvest of a large model costs one write, not a write and a copy. `close()` re-opens the
folder with `load_from_disk` to check it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa
from datasets import Array2D, Features, Value, load_from_disk
from datasets.arrow_writer import ArrowWriter
from datasets.info import DatasetInfo
from datasets.utils.py_utils import asdict

SHARD_BYTES = 512 * 2**20  # save_to_disk's default max_shard_size is 500 MB


def harvest_features(
    num_layers: int, top_k: int, num_experts: int, hidden_size: int, num_hidden_layers: int, router_logits: bool = False
) -> Features:
    """The columns of a harvest (what `data_pipelines/load.py` reads): one row per token; `hidden` only if kept."""
    columns = {
        "sequence_id": Value("int32"),
        "position": Value("int32"),
        "token_id": Value("int32"),
        "is_prompt": Value("bool"),
        "expert_ids": Array2D(shape=(num_layers, top_k), dtype="int16"),
        "expert_weights": Array2D(shape=(num_layers, top_k), dtype="float16"),
    }
    if num_hidden_layers:
        columns["hidden"] = Array2D(shape=(num_hidden_layers, hidden_size), dtype="float16")
    if router_logits:
        columns["router_logits"] = Array2D(shape=(num_layers, num_experts), dtype="float16")
    return Features(columns)


def to_arrow_table(columns: dict[str, np.ndarray], features: Features) -> pa.Table:
    """Numpy columns ([T] or [T, A, B]) to an Arrow table of `features`, without a Python loop over rows."""
    schema = features.arrow_schema
    arrays = []
    for field in schema:
        values = np.ascontiguousarray(columns[field.name])
        if values.ndim == 1:
            arrays.append(pa.array(values, type=field.type))
        else:
            arrays.append(_array2d(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _array2d(values_TAB: np.ndarray, ext_type: pa.ExtensionType) -> pa.ExtensionArray:
    """datasets' Array2D storage is list<list<value>>: build the two offset levels from the shape."""
    num_rows, a, b = values_TAB.shape
    flat = pa.array(values_TAB.reshape(-1))
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, num_rows * a * b + 1, b, dtype=np.int32)), flat)
    outer = pa.ListArray.from_arrays(pa.array(np.arange(0, num_rows * a + 1, a, dtype=np.int32)), inner)
    return pa.ExtensionArray.from_storage(ext_type, outer)


class CloseOrAbort:
    """Context-manager mixin for writers: `close()` (finish) after a clean block, `abort()` after a failure."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ShardWriter(CloseOrAbort):
    """Appends tables to shard files in `folder` and finishes it as a `save_to_disk` dataset folder."""

    def __init__(self, folder: Path, features: Features, fingerprint: str, shard_bytes: int = SHARD_BYTES):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=False)
        self.features = features
        self.fingerprint = fingerprint
        self.shard_bytes = shard_bytes
        self.num_rows = 0
        self.num_bytes = 0
        self._shards: list[Path] = []
        self._writer: ArrowWriter | None = None
        self._shard_nbytes = 0

    def write(self, columns: dict[str, np.ndarray]) -> None:
        table = to_arrow_table(columns, self.features)
        if self._writer is None or self._shard_nbytes >= self.shard_bytes:
            self._next_shard()
        self._writer.write_table(table)
        self._shard_nbytes += table.nbytes
        self.num_bytes += table.nbytes
        self.num_rows += table.num_rows

    def _next_shard(self) -> None:
        if self._writer is not None:
            self._writer.finalize()
        path = self.folder / f"shard-{len(self._shards):05d}.arrow"
        self._shards.append(path)
        self._writer = ArrowWriter(features=self.features, path=str(path))
        self._shard_nbytes = 0

    def finish_shards(self) -> list[Path]:
        """Finalize the last shard and return the shard files in order (a rank of a distributed harvest stops
        here: rank 0 names all ranks' shards and writes the JSON files with `finish_dataset_folder`)."""
        if self._writer is None:
            self._next_shard()  # an empty dataset still gets one (empty) shard with the schema
        self._writer.finalize()
        self._writer = None
        return list(self._shards)

    def close(self) -> None:
        """Finish the last shard, name shards and write the JSON files exactly as `save_to_disk` does."""
        finish_dataset_folder(self.folder, self.finish_shards(), self.features, self.fingerprint, self.num_rows)

    def abort(self) -> None:
        """After a failure: release the open shard's file without finishing it (the caller removes the folder).
        `ArrowWriter.close` only closes the stream, so it cannot raise over the error that brought us here."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def finish_dataset_folder(
    folder: Path, shards: list[Path], features: Features, fingerprint: str, num_rows: int
) -> None:
    """Move `shards` (in order) into `folder` as `data-0000i-of-0000n.arrow`, write the two JSON files
    `save_to_disk` writes, and re-open the folder with `load_from_disk` to check it holds `num_rows` rows."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    num_shards = len(shards)
    names = [f"data-{i:05d}-of-{num_shards:05d}.arrow" for i in range(num_shards)]
    for shard, name in zip(shards, names, strict=True):
        os.replace(shard, folder / name)
    state = {
        "_data_files": [{"filename": name} for name in names],
        "_fingerprint": fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    info = asdict(DatasetInfo(features=features))
    (folder / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2))
    reopened = load_from_disk(str(folder))
    if reopened.num_rows != num_rows or reopened.features != features:
        raise RuntimeError(f"harvest folder {folder} does not re-open as written (datasets format change?)")
