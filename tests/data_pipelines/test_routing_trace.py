"""External routing traces (data_pipelines/routing_trace.py): the three formats read alike, every malformed input
is one line naming the row, and passes come out of phase and position.

    pytest tests/data_pipelines/test_routing_trace.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from data_pipelines.routing_trace import TraceError, read_routing_trace
from eval.trace import Trace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "routing_trace.jsonl"


def rows_of(sequences: dict[int, list[tuple[int, str]]], num_layers: int = 2, k: int = 2) -> list[dict]:
    """Rows for {sequence: [(position, phase), ...]}, experts (position + layer + j) % 8, in file order."""
    rows = []
    for seq, tokens in sequences.items():
        for position, phase in tokens:
            for layer in range(num_layers):
                ids = [(position + layer + j + seq) % 8 for j in range(k)]
                rows.append(
                    {
                        "sequence": seq,
                        "position": position,
                        "phase": phase,
                        "layer": layer,
                        "expert_ids": ids,
                        "weights": [1.0 / k] * k,
                        "num_experts": 8,
                    }
                )
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {0: [(0, "prefill"), (1, "prefill"), (2, "decode"), (3, "decode")], 1: [(0, "prefill"), (1, "decode")]}


def test_example_file_reads_and_rebuilds_passes():
    trace = read_routing_trace(EXAMPLE)
    assert trace.manifest["model"] == {"num_layers": 2, "num_experts": 8, "top_k": 2}
    assert (trace.manifest["num_tokens"], trace.manifest["num_sequences"]) == (5, 2)
    assert trace.dataset["phase"] == ["prefill", "prefill", "decode", "decode", "prefill"]
    assert trace.dataset["expert_ids"][2] == [[5, 3], [1, 0]]
    replay = Trace.from_harvest(trace, split=None, with_hidden=False)
    # sequence 0: one prefill pass over positions 0-1, then one pass per decode token; sequence 1: one prefill
    assert replay.pass_bounds == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert replay.pass_is_prefill == [True, False, False, True]
    assert [k.expert for k in replay.requests()[0][0]] == [3, 5, 7]  # union of the prompt's layer-0 experts
    assert len(trace.validation) == 1 and len(trace.train) == 4  # the last sequence is held out


def test_parquet_jsonl_and_saved_dataset_read_alike(tmp_path):
    rows = rows_of(GOOD)
    # interleaved sequences (as a serving log writes them) are fine: only positions within a sequence must be ordered
    rows = [r for pair in zip(rows[:4], rows[8:12], strict=True) for r in pair] + rows[4:8] + rows[12:]
    jsonl = write_jsonl(rows, tmp_path / "t.jsonl")
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    saved = tmp_path / "saved"
    Dataset.from_list(rows).save_to_disk(str(saved))
    read = [read_routing_trace(p).dataset.to_dict() for p in (jsonl, parquet, saved)]
    assert read[0] == read[1] == read[2]
    assert read[0]["sequence_id"] == [0, 0, 0, 0, 1, 1]
    assert read[0]["position"] == [0, 1, 2, 3, 0, 1]
    assert read[0]["expert_ids"][5] == [[2, 3], [3, 4]]


def test_weights_and_num_experts_are_optional(tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("weights", "num_experts")} for r in rows_of(GOOD)]
    path = write_jsonl(rows, tmp_path / "t.jsonl")
    with pytest.raises(TraceError, match="number of experts is unknown: add a num_experts column or pass"):
        read_routing_trace(path)
    trace = read_routing_trace(path, num_experts=16)
    assert trace.manifest["model"]["num_experts"] == 16 and not trace.manifest["has_weights"]
    assert np.allclose(np.asarray(trace.dataset["expert_weights"]), 0.5)


def _break(rows: list[dict], index: int, **change) -> list[dict]:
    rows = [dict(r) for r in rows]
    for key, value in change.items():
        if value is None:
            rows[index].pop(key)
        else:
            rows[index][key] = value
    return rows


# (what is broken, rows, the one line expected: the row named and the problem)
MALFORMED = [
    ("missing column", [{k: v for k, v in r.items() if k != "phase"} for r in rows_of(GOOD)], "missing column 'phase'"),
    ("id >= E", _break(rows_of(GOOD), 5, expert_ids=[1, 8]), "row 5: expert id 8 is outside 0..7"),
    ("negative id", _break(rows_of(GOOD), 3, expert_ids=[-1, 2]), "row 3: expert id -1 is outside 0..7"),
    ("varying k", _break(rows_of(GOOD), 6, expert_ids=[1, 2, 3]), "row 6: 3 expert_ids, but row 0 has 2"),
    ("weights length", _break(rows_of(GOOD), 4, weights=[1.0]), "row 4: 1 weights, but expert_ids have 2"),
    (
        "layer gap",
        _break(rows_of(GOOD, num_layers=3), 4, layer=3),
        "row 5: sequence 0, position 1 has layer 2 but no layer 1 (layer gap)",
    ),
    ("duplicate layer", _break(rows_of(GOOD), 3, layer=0), "row 3: layer 0 of sequence 0, position 1 appears twice"),
    ("missing last layer", rows_of(GOOD)[:-1], "row 10: sequence 1, position 1 has layers 0..0, but the trace has 2"),
    (
        "unsorted positions",
        rows_of({0: [(0, "prefill"), (2, "decode"), (1, "decode")]}),
        "row 4: position 1 of sequence 0 comes after position 2 (row 3)",
    ),
    (
        "prefill after decode",
        rows_of({0: [(0, "prefill"), (1, "decode"), (2, "prefill")]}),
        "row 4: prefill token at sequence 0, position 2 comes after a decode token",
    ),
    ("bad phase", _break(rows_of(GOOD), 2, phase="generate"), "row 2: phase is 'generate'"),
    ("null field", _break(rows_of(GOOD), 7, position=None), "row 7: position is missing"),
    ("varying num_experts", _break(rows_of(GOOD), 1, num_experts=16), "row 1: num_experts is 16, but row 0 says 8"),
    ("repeated expert", _break(rows_of(GOOD), 0, expert_ids=[2, 2]), "row 0: expert_ids [2, 2] name an expert twice"),
]


@pytest.mark.parametrize("what, rows, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_trace_is_one_line_naming_row_and_problem(tmp_path, what, rows, message):
    with pytest.raises(TraceError) as caught:
        read_routing_trace(write_jsonl(rows, tmp_path / "t.jsonl"))
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_empty_and_unreadable_files(tmp_path):
    for name in ("empty.jsonl", "empty.parquet"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(TraceError, match="empty trace: .* has no rows"):
            read_routing_trace(tmp_path / name)
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(TraceError, match="empty trace"):
        read_routing_trace(tmp_path / "blank.jsonl")
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows_of(GOOD)[0]) + "\n{not json\n")
    with pytest.raises(TraceError, match=r"row 1 \(line 2\) of bad.jsonl is not JSON"):
        read_routing_trace(tmp_path / "bad.jsonl")
    with pytest.raises(TraceError, match="unsupported trace file t.csv"):
        (tmp_path / "t.csv").write_text("a,b\n")
        read_routing_trace(tmp_path / "t.csv")
    with pytest.raises(TraceError, match="no trace at"):
        read_routing_trace(tmp_path / "missing.parquet")


def test_prompt_rows_after_decode_rows_are_refused_by_the_trace():
    ids = np.zeros((3, 1, 1), dtype=np.int64)
    with pytest.raises(ValueError, match="sequence 0 has prompt"):
        Trace.from_arrays(ids, [0, 0, 0], [True, False, True], num_experts=1)
