"""ShardWriter writes a folder `datasets.load_from_disk` opens, across shards, with the values bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import load_from_disk

from data_pipelines.writer import ShardWriter, harvest_features


def batch(rng: np.random.Generator, first_sequence: int, num_tokens: int = 64) -> dict[str, np.ndarray]:
    position = np.tile(np.arange(16, dtype=np.int32), num_tokens // 16)
    return {
        "sequence_id": np.repeat(np.arange(first_sequence, first_sequence + num_tokens // 16, dtype=np.int32), 16),
        "position": position,
        "token_id": rng.integers(0, 4096, num_tokens).astype(np.int32),
        "is_prompt": position < 12,
        "expert_ids": rng.integers(0, 32, (num_tokens, 3, 4)).astype(np.int16),
        "expert_weights": rng.random((num_tokens, 3, 4)).astype(np.float16),
        "hidden": rng.standard_normal((num_tokens, 2, 8)).astype(np.float16),
        "router_logits": rng.standard_normal((num_tokens, 3, 32)).astype(np.float16),
    }


def test_shards_roundtrip_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    features = harvest_features(num_layers=3, top_k=4, num_experts=32, hidden_size=8, num_hidden_layers=2,
                                router_logits=True)  # fmt: skip
    batches = [batch(rng, 4 * i) for i in range(5)]
    with ShardWriter(tmp_path / "data", features, "test", shard_bytes=20_000) as writer:
        for columns in batches:
            writer.write(columns)
    files = sorted(p.name for p in (tmp_path / "data").glob("*.arrow"))
    assert len(files) > 1 and files[0] == f"data-00000-of-{len(files):05d}.arrow"
    data = load_from_disk(str(tmp_path / "data"))
    assert data.features == features and len(data) == 5 * 64
    table = data.with_format("arrow")[:]
    for name in features:
        stored = table[name].combine_chunks()
        if name in ("expert_ids", "expert_weights", "hidden", "router_logits"):
            expected = np.concatenate([b[name] for b in batches])
            values = stored.storage.flatten().flatten().to_numpy().reshape(expected.shape)
            assert values.dtype == expected.dtype and np.array_equal(values, expected)
        else:
            assert np.array_equal(stored.to_numpy(zero_copy_only=False), np.concatenate([b[name] for b in batches]))


def test_empty_writer_still_opens(tmp_path):
    features = harvest_features(num_layers=2, top_k=2, num_experts=4, hidden_size=8, num_hidden_layers=0)
    with ShardWriter(tmp_path / "data", features, "empty"):
        pass
    data = load_from_disk(str(tmp_path / "data"))
    assert len(data) == 0 and "hidden" not in data.column_names


def test_a_failure_inside_propagates_and_closes_the_open_shard(tmp_path):
    features = harvest_features(num_layers=2, top_k=2, num_experts=4, hidden_size=8, num_hidden_layers=0)
    rng = np.random.default_rng(1)
    columns = {k: v[:, :2, :2] if k in ("expert_ids", "expert_weights") else v for k, v in batch(rng, 0).items()}
    columns = {k: v for k, v in columns.items() if k in features}
    with pytest.raises(KeyError, match="boom"), ShardWriter(tmp_path / "data", features, "fails") as writer:
        writer.write(columns)
        stream = writer._writer.stream
        raise KeyError("boom")
    assert stream.closed and writer._writer is None
