"""Read a routing trace logged outside this project (Parquet, JSONL, or a saved `datasets` dataset) into harvest rows.

    from data_pipelines.routing_trace import read_routing_trace
    trace = read_routing_trace("examples/routing_trace.jsonl")             # RoutingTrace
    trace = read_routing_trace("serving_log.parquet", num_experts=64)     # when the file has no num_experts column
    trace.dataset     # datasets.Dataset, one row per token: the columns of a harvest minus hidden states
    trace.manifest    # model (num_layers, num_experts, top_k), num_sequences, validation_sequence_ids, ...
    trace.train, trace.validation                                          # split by sequence, like a harvest

Input schema (README, "Replay routing logged elsewhere"): one row per token per MoE layer, with
    sequence (int), position (int, the token's index in its sequence), phase ("prefill" or "decode"),
    layer (int, MoE layer index from 0), expert_ids (list of k ints), weights (optional list of k floats),
    num_experts (optional int, the same on every row; else pass `num_experts`).
Rows of one sequence must come in position order (sequences may interleave, as in a serving log); each token
has one row per MoE layer 0..L-1, and a sequence's prefill tokens come before its decode tokens.

Output rows (one per token, sorted by sequence then position): `sequence_id` and `sequence` (the same id; the
first is a harvest's name, the second the trace schema's), `position`, `phase`, `is_prompt` (phase is
prefill), `expert_ids` [L, k] int16 and `expert_weights` [L, k] float16 (1/k each when the trace has no
weights). The validation split is the last `validation_fraction` of the sequences, as in a harvest.

Every check runs before anything is returned: a malformed input raises `TraceError` (a ValueError) whose
message is one line naming the row (0-based, in file order) and the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Array2D, Dataset, Features, Value
from datasets.info import DatasetInfo
from datasets.table import InMemoryTable

from data_pipelines.config import describe_error
from data_pipelines.load import SequenceSplits
from data_pipelines.sources import num_validation_sequences
from data_pipelines.writer import to_arrow_table

REQUIRED_COLUMNS = ("sequence", "position", "phase", "layer", "expert_ids")
PHASES = ("prefill", "decode")
TRACE_SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}


class TraceError(ValueError):
    """A malformed external routing trace: one line naming the row and the problem."""


@dataclass
class RoutingTrace(SequenceSplits):
    """An external trace read into harvest-shaped rows (no hidden states); `train`/`validation` by sequence."""

    path: Path
    dataset: Dataset
    manifest: dict = field(repr=False)


def trace_features(num_layers: int, top_k: int) -> Features:
    """Columns of a RoutingTrace's dataset (a harvest's, minus token ids and hidden states, plus phase)."""
    return Features(
        {
            "sequence_id": Value("int64"),
            "sequence": Value("int64"),
            "position": Value("int64"),
            "phase": Value("string"),
            "is_prompt": Value("bool"),
            "expert_ids": Array2D(shape=(num_layers, top_k), dtype="int16"),
            "expert_weights": Array2D(shape=(num_layers, top_k), dtype="float16"),
        }
    )


def read_routing_trace(
    path: str | Path, num_experts: int | None = None, validation_fraction: float = 0.1
) -> RoutingTrace:
    """Read and check the trace at `path` (a .parquet or .jsonl file, or a `save_to_disk` folder)."""
    path = Path(path)
    table = read_trace_table(path)
    if table.num_rows == 0:
        raise TraceError(f"empty trace: {path} has no rows")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise TraceError(
            f"missing column {missing[0]!r} in {path} (it has: {', '.join(table.column_names)}; needs: "
            f"{', '.join(REQUIRED_COLUMNS)}, optional weights, num_experts)"
        )
    sequence = _int_column(table, "sequence")
    position = _int_column(table, "position")
    layer = _int_column(table, "layer")
    phase = _phase_column(table)
    ids_NK = _list_column(table, "expert_ids", integer=True)
    top_k = ids_NK.shape[1]
    weights_NK = _list_column(table, "weights", integer=False, width=top_k) if "weights" in table.column_names else None
    num_experts = _num_experts(table, num_experts)
    _check_ids(ids_NK, num_experts)
    _check_nonnegative(position, "position")
    _check_nonnegative(layer, "layer")

    order, token_start = _token_order(sequence, position, layer)
    num_layers = int(layer.max()) + 1
    _check_layers(order, token_start, sequence, position, layer, num_layers)
    _check_token_phase(order, token_start, sequence, position, phase)

    num_tokens = len(token_start)
    first = order[token_start]  # a row of each token (its layer 0), in (sequence, position) order
    ids_TLK = ids_NK[order].reshape(num_tokens, num_layers, top_k)
    if weights_NK is None:
        weights_TLK = np.full(ids_TLK.shape, 1.0 / top_k, dtype=np.float32)
    else:
        weights_TLK = weights_NK[order].reshape(num_tokens, num_layers, top_k)
    sequence_T = sequence[first]
    is_prompt_T = phase[first] == 0
    columns = {
        "sequence_id": sequence_T,
        "sequence": sequence_T,
        "position": position[first],
        "phase": np.asarray(PHASES, dtype=object)[phase[first]],
        "is_prompt": is_prompt_T,
        "expert_ids": ids_TLK.astype(np.int16),
        "expert_weights": weights_TLK.astype(np.float16),
    }
    features = trace_features(num_layers, top_k)
    dataset = Dataset(InMemoryTable(to_arrow_table(columns, features)), info=DatasetInfo(features=features))
    sequence_ids = np.unique(sequence_T).tolist()
    num_validation = num_validation_sequences(len(sequence_ids), validation_fraction)
    manifest = {
        "source": {"kind": "external routing trace", "path": str(path.resolve()), "format": _format_of(path)},
        "model": {"num_layers": num_layers, "num_experts": num_experts, "top_k": top_k},
        "num_rows": int(table.num_rows),
        "num_tokens": num_tokens,
        "num_sequences": len(sequence_ids),
        "num_prefill_tokens": int(is_prompt_T.sum()),
        "num_decode_tokens": int((~is_prompt_T).sum()),
        "has_weights": weights_NK is not None,
        "hidden_layers": [],
        "validation_sequence_ids": sequence_ids[len(sequence_ids) - num_validation :],
    }
    return RoutingTrace(path, dataset, manifest)


def read_trace_table(path: Path) -> pa.Table:
    """The raw rows of a trace file or saved dataset as an Arrow table (no checks beyond readability)."""
    if not path.exists():
        raise TraceError(f"no trace at {path}")
    kind = _format_of(path)
    try:
        if kind == "dataset":
            from datasets import load_from_disk

            loaded = load_from_disk(str(path))
            if not isinstance(loaded, Dataset):
                raise TraceError(f"{path} is a DatasetDict; point --trace at one split's folder")
            return loaded.data.table
        if path.stat().st_size == 0:
            return pa.table({})
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        return _read_jsonl(path)
    except TraceError:
        raise
    except Exception as err:  # pyarrow/datasets raise many types; the user needs the one line
        raise TraceError(f"cannot read {path}: {describe_error(err)}") from err


def _format_of(path: Path) -> str:
    if path.is_dir():
        if not (path / "dataset_info.json").is_file() and not (path / "state.json").is_file():
            raise TraceError(f"{path} is a folder but not a saved `datasets` dataset (no state.json)")
        return "dataset"
    kind = TRACE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise TraceError(f"unsupported trace file {path.name}: use .parquet, .jsonl, or a save_to_disk folder")
    return kind


def _read_jsonl(path: Path) -> pa.Table:
    """JSON lines, parsed with the standard library so a bad line is reported by its row number."""
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TraceError(f"row {len(rows)} (line {number + 1}) of {path.name} is not JSON: {err.msg}") from err
            if not isinstance(row, dict):
                raise TraceError(f"row {len(rows)} (line {number + 1}) of {path.name} is not a JSON object")
            rows.append(row)
    if not rows:
        return pa.table({})
    names = list(dict.fromkeys(k for row in rows for k in row))
    return pa.table({name: [row.get(name) for row in rows] for name in names})


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if len(bad) else None


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name).combine_chunks()
    if column.null_count:
        row = _first_bad(column.is_null().to_numpy(zero_copy_only=False))
        raise TraceError(f"row {row}: {name} is missing (null)")
    return column


def _int_column(table: pa.Table, name: str) -> np.ndarray:
    column = _column(table, name)
    if not pa.types.is_integer(column.type):
        raise TraceError(f"column {name!r} must hold integers, but holds {column.type} (row 0: {column[0]})")
    return column.to_numpy().astype(np.int64)


def _phase_column(table: pa.Table) -> np.ndarray:
    """Phase as 0 (prefill) / 1 (decode)."""
    column = _column(table, "phase")
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise TraceError(f"column 'phase' must hold the strings prefill or decode, but holds {column.type}")
    is_prefill = pc.equal(column, "prefill").to_numpy(zero_copy_only=False)
    is_decode = pc.equal(column, "decode").to_numpy(zero_copy_only=False)
    row = _first_bad(~(is_prefill | is_decode))
    if row is not None:
        raise TraceError(f"row {row}: phase is {column[row].as_py()!r}; it must be 'prefill' or 'decode'")
    return is_decode.astype(np.int64)


def _list_column(table: pa.Table, name: str, integer: bool, width: int | None = None) -> np.ndarray:
    """A list column as [N, k]; every row must have the same k (`width` when given)."""
    column = _column(table, name)
    if not (
        pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type)
    ):
        raise TraceError(f"column {name!r} must hold lists, but holds {column.type} (row 0: {column[0]})")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    expected = int(lengths[0]) if width is None else width
    row = _first_bad(lengths != expected)
    if row is not None:
        what = f"row 0 has {expected}" if width is None else f"expert_ids have {width}"
        raise TraceError(f"row {row}: {int(lengths[row])} {name}, but {what} (k must be the same on every row)")
    if expected == 0:
        raise TraceError(f"row 0: {name} is an empty list")
    values = pc.list_flatten(column)
    if values.null_count:
        flat_row = _first_bad(values.is_null().to_numpy(zero_copy_only=False))
        raise TraceError(f"row {flat_row // expected}: {name} holds a null")
    kind_ok = (
        pa.types.is_integer(values.type)
        if integer
        else (pa.types.is_floating(values.type) or pa.types.is_integer(values.type))
    )
    if not kind_ok:
        raise TraceError(
            f"column {name!r} must hold lists of {'integers' if integer else 'numbers'}, "
            f"but holds lists of {values.type}"
        )
    flat = values.to_numpy(zero_copy_only=False)
    return flat.astype(np.int64 if integer else np.float32).reshape(len(column), expected)


def _num_experts(table: pa.Table, given: int | None) -> int:
    if "num_experts" in table.column_names:
        column = _int_column(table, "num_experts")
        row = _first_bad(column != column[0])
        if row is not None:
            raise TraceError(f"row {row}: num_experts is {column[row]}, but row 0 says {column[0]}")
        if given is not None and given != column[0]:
            raise TraceError(f"--num-experts {given} disagrees with the trace's num_experts column ({column[0]})")
        given = int(column[0])
    if given is None:
        raise TraceError("the number of experts is unknown: add a num_experts column or pass --num-experts")
    if given < 1:
        raise TraceError(f"num_experts must be at least 1, got {given}")
    return int(given)


def _check_ids(ids_NK: np.ndarray, num_experts: int) -> None:
    out_of_range = (ids_NK < 0) | (ids_NK >= num_experts)
    row = _first_bad(out_of_range.any(axis=1))
    if row is not None:
        bad = int(ids_NK[row][out_of_range[row]][0])
        raise TraceError(f"row {row}: expert id {bad} is outside 0..{num_experts - 1} (num_experts {num_experts})")
    ordered = np.sort(ids_NK, axis=1)
    row = _first_bad((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if row is not None:
        raise TraceError(f"row {row}: expert_ids {ids_NK[row].tolist()} name an expert twice")


def _check_nonnegative(values: np.ndarray, name: str) -> None:
    row = _first_bad(values < 0)
    if row is not None:
        raise TraceError(f"row {row}: {name} is {values[row]}; it must be 0 or more")


def _token_order(sequence: np.ndarray, position: np.ndarray, layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by (sequence, position, layer), and where each token's rows start in that order.

    Positions must not go back within a sequence in file order (sequences may interleave)."""
    by_sequence = np.argsort(sequence, kind="stable")  # file order kept within a sequence
    seq, pos = sequence[by_sequence], position[by_sequence]
    back = (seq[1:] == seq[:-1]) & (pos[1:] < pos[:-1])
    i = _first_bad(back)
    if i is not None:
        row = int(by_sequence[i + 1])
        raise TraceError(
            f"row {row}: position {pos[i + 1]} of sequence {seq[i + 1]} comes after position {pos[i]} "
            f"(row {int(by_sequence[i])}); the rows of a sequence must be in position order"
        )
    order = np.lexsort((layer, position, sequence))
    seq, pos = sequence[order], position[order]
    new_token = np.ones(len(order), dtype=bool)
    new_token[1:] = (seq[1:] != seq[:-1]) | (pos[1:] != pos[:-1])
    return order, np.flatnonzero(new_token)


def _check_layers(order, token_start, sequence, position, layer, num_layers: int) -> None:
    """Each token has exactly one row per MoE layer 0..L-1."""
    sizes = np.diff(np.append(token_start, len(order)))
    index_in_token = np.arange(len(order)) - np.repeat(token_start, sizes)
    got = layer[order]
    i = _first_bad(got != index_in_token)
    if i is not None:
        row = int(order[i])
        where = where_of(sequence, position, row)
        if index_in_token[i] > 0 and got[i] == got[i - 1]:
            raise TraceError(f"row {row}: layer {got[i]} of {where} appears twice")
        raise TraceError(f"row {row}: {where} has layer {got[i]} but no layer {index_in_token[i]} (layer gap)")
    t = _first_bad(sizes != num_layers)
    if t is not None:
        row = int(order[token_start[t]])
        raise TraceError(
            f"row {row}: {where_of(sequence, position, row)} has layers 0..{sizes[t] - 1}, but the trace has "
            f"{num_layers} MoE layers (layer {sizes[t]} missing)"
        )


def where_of(sequence: np.ndarray, position: np.ndarray, row: int) -> str:
    return f"sequence {sequence[row]}, position {position[row]}"


def _check_token_phase(order, token_start, sequence, position, phase) -> None:
    """One phase per token, and a sequence's prefill tokens before its decode tokens."""
    sorted_phase = phase[order]
    token_of_row = np.repeat(np.arange(len(token_start)), np.diff(np.append(token_start, len(order))))
    i = _first_bad(sorted_phase != sorted_phase[token_start][token_of_row])
    if i is not None:
        row = int(order[i])
        raise TraceError(
            f"row {row}: {where_of(sequence, position, row)} is {PHASES[phase[row]]} at layer "
            f"{i - token_start[token_of_row[i]]} but {PHASES[1 - phase[row]]} at layer 0"
        )
    first = order[token_start]
    seq, ph = sequence[first], phase[first]
    t = _first_bad((seq[1:] == seq[:-1]) & (ph[:-1] == 1) & (ph[1:] == 0))
    if t is not None:
        row = int(first[t + 1])
        raise TraceError(
            f"row {row}: prefill token at {where_of(sequence, position, row)} comes after a decode "
            f"token of that sequence (prefill tokens must precede decode tokens)"
        )


TRACE_MODEL_TYPE = "routing-trace"  # a bank trained from a trace records this in place of a model family


def trace_checksum(path: str | Path) -> str:
    """`sha256:<hex>` of a trace file; of a saved dataset folder, the sha256 of its files' sorted checksums."""
    import hashlib

    from specmd_predict.io import file_checksum

    path = Path(path)
    if path.is_file():
        return file_checksum(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    lines = "".join(f"{p.relative_to(path).as_posix()} {file_checksum(p)}\n" for p in files)
    return f"sha256:{hashlib.sha256(lines.encode()).hexdigest()}"


def trace_identity(trace: RoutingTrace) -> dict:
    """The identity a predictor bank trained on `trace` records in place of a model's (the keys of
    specmd_predict.predictors.base.IDENTITY_KEYS): its shapes, no hidden size, the trace's checksum."""
    model = trace.manifest["model"]
    return {
        "model_type": TRACE_MODEL_TYPE,
        "num_layers": int(model["num_layers"]),
        "num_experts": int(model["num_experts"]),
        "top_k": int(model["top_k"]),
        "hidden_size": 0,
        "router_fingerprint": trace_checksum(trace.path),
    }


def check_trace_shapes(identity: dict, trace: RoutingTrace, what: str = "predictor bank") -> None:
    """One-line ValueError when a bank's recorded shapes (MoE layers, experts, top-k) are not the trace's."""
    model = trace.manifest["model"]
    diffs = [
        f"{key} {identity.get(key)} vs the trace's {model[key]}"
        for key in ("num_layers", "num_experts", "top_k")
        if identity.get(key) != model[key]
    ]
    if diffs:
        raise ValueError(f"this {what} does not fit the trace {trace.path.name}: {'; '.join(diffs)}")
