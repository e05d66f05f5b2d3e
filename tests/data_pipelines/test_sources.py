"""Text sources: local txt/jsonl/parquet files and the embedded corpus, packed into EOS-joined rows."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipelines import HarvestConfig, HarvestError
from data_pipelines.sources import open_text_source, pack

TEXTS = [f"def function_{i}(x):\n    return x * {i} + {i * i}\n" * 8 for i in range(6)]


def rows_of(config: HarvestConfig, tokenizer, num_sequences: int = 6, fraction: float = 0.0):
    source = open_text_source(config)
    rows = list(source.sequences(tokenizer, config.seq_len, num_sequences, fraction))
    return source, rows


def expected_rows(tokenizer, seq_len: int, limit: int) -> np.ndarray:
    stream = [t for text in TEXTS for t in [*tokenizer(text)["input_ids"], tokenizer.eos_token_id]]
    return np.array(stream[: limit * seq_len]).reshape(limit, seq_len)


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_local_files_give_the_same_rows(kind, tmp_path, tiny_tokenizer):
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "txt":
        for i, text in enumerate(TEXTS):  # one document per file, newlines kept
            (folder / f"{i:02d}.txt").write_text(text)
    elif kind == "jsonl":
        (folder / "rows.jsonl").write_text(
            "".join(json.dumps({"body": t, "id": i}) + "\n" for i, t in enumerate(TEXTS))
        )
    else:
        pq.write_table(pa.table({"body": TEXTS}), folder / "rows.parquet")
    config = HarvestConfig(dataset=str(folder), text_column="body", seq_len=16, max_tokens=16 * 6)
    source, rows = rows_of(config, tiny_tokenizer)
    assert source.describe()["source"] == "local"
    assert np.array_equal(np.stack(rows), expected_rows(tiny_tokenizer, 16, len(rows)))
    assert len(rows) == 6


def test_validation_is_the_tail_of_the_stream(tmp_path, tiny_tokenizer):
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    source, rows = rows_of(HarvestConfig(dataset=str(tmp_path / "rows.jsonl"), seq_len=16), tiny_tokenizer, 10, 0.2)
    assert len(rows) == 10 and source.validation_ids == [8, 9]


def test_embedded_corpus_validation_rows_come_from_validation_files(tiny_tokenizer):
    config = HarvestConfig(seq_len=64)
    source, rows = rows_of(config, tiny_tokenizer, num_sequences=10, fraction=0.3)
    assert source.validation_ids == [7, 8, 9] and len(rows) == 10
    from specmd_predict.embedded_corpus import corpus_files

    validation_texts = {p.read_text(encoding="utf-8", errors="replace")[:200] for p in corpus_files("validation")}
    first_validation_text = tiny_tokenizer.decode(rows[7][:40].tolist())
    assert any(text.startswith(first_validation_text[:30]) for text in validation_texts)
    other_seed = rows_of(HarvestConfig(seq_len=64, seed=1), tiny_tokenizer, 10, 0.3)[1]
    assert not np.array_equal(rows[0], other_seed[0])  # file order follows the seed


def test_pack_drops_the_incomplete_tail_and_respects_the_limit(tiny_tokenizer):
    full = expected_rows(tiny_tokenizer, 32, 3)
    assert np.array_equal(np.stack(list(pack(TEXTS, tiny_tokenizer, 32, 3))), full)
    assert list(pack(["x"], tiny_tokenizer, 32, 3)) == []


def test_unsupported_or_mixed_files_are_refused(tmp_path):
    (tmp_path / "a.csv").write_text("text\nhello\n")
    with pytest.raises(HarvestError, match="unsupported text file type"):
        open_text_source(HarvestConfig(dataset=str(tmp_path / "a.csv")))
    (tmp_path / "b.txt").write_text("hello")
    (tmp_path / "c.jsonl").write_text('{"text": "hello"}\n')
    with pytest.raises(HarvestError, match="mixed file types"):
        open_text_source(HarvestConfig(dataset=str(tmp_path / "[bc].*")))
