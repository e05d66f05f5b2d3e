"""The recorder's asynchronous path and the writer thread: same columns as the synchronous call, a fixed number
of host buffers in flight, and a writer error raised in the caller's thread without a deadlock."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from data_pipelines.background import BackgroundWriter
from data_pipelines.generate import GenerateRecorder
from data_pipelines.recorder import BatchRecorder, PendingBatch
from data_pipelines.writer import ShardWriter, harvest_features
from specmd_predict.adapters import get_adapter
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def recorder_parts():
    model = tiny_model("olmoe")
    return model, get_adapter(model)


def test_async_columns_equal_the_synchronous_ones(recorder_parts):
    model, adapter = recorder_parts
    ids_BS = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(0))
    with BatchRecorder(model, adapter, [0, 2], keep_router_logits=True, prompt_tokens=12) as recorder:
        expected = recorder(ids_BS, first_sequence_id=5)
        pending = recorder.record(ids_BS, first_sequence_id=5)
        columns = pending.columns()
        assert set(columns) == set(expected)
        for name, values in expected.items():
            assert np.array_equal(columns[name], values), name
        assert columns["hidden"].shape == (48, 2, 32) and columns["router_logits"].shape == (48, 3, 8)
        pending.release()


def test_recorders_refuse_a_batch_outside_their_with_block(recorder_parts):
    model, adapter = recorder_parts
    ids_BS = torch.zeros((1, 4), dtype=torch.long)
    recorder = BatchRecorder(model, adapter, [0], False, 4)
    with pytest.raises(RuntimeError, match="use BatchRecorder inside a `with` block"):
        recorder.record(ids_BS, 0)
    with recorder:
        recorder(ids_BS, 0)
    with pytest.raises(RuntimeError, match="use BatchRecorder inside"):  # the hooks are gone after the block
        recorder(ids_BS, 0)
    generator = GenerateRecorder(model, adapter, [0], False, new_tokens=2)
    with pytest.raises(RuntimeError, match="use GenerateRecorder inside a `with` block"):
        generator(ids_BS, 0)


def test_record_waits_while_every_buffer_is_in_flight(recorder_parts):
    model, adapter = recorder_parts
    ids_BS = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(1))
    with BatchRecorder(model, adapter, [0], False, 4, num_buffers=1) as recorder:
        first = recorder.record(ids_BS, 0)
        done = threading.Event()
        second: list[PendingBatch] = []

        def record_second():
            with torch.inference_mode():  # hooks fire on this thread too
                second.append(recorder.record(ids_BS, 2))
            done.set()

        thread = threading.Thread(target=record_second)
        thread.start()
        assert not done.wait(0.5)  # no buffer set free: the forward's thread waits (bounded host memory)
        first.release()
        assert done.wait(30)
        thread.join()
        second[0].release()


def test_writer_error_reaches_the_caller_and_releases_every_batch(tmp_path):
    features = harvest_features(num_layers=2, top_k=2, num_experts=4, hidden_size=8, num_hidden_layers=0)
    released = []
    bad = {"sequence_id": np.zeros(3, np.int32)}  # columns missing: the Arrow conversion fails on the thread
    shards = ShardWriter(tmp_path / "data", features, "bad")
    writer = BackgroundWriter(shards)
    for i in range(4):
        writer.submit(PendingBatch(bad, {}, [], lambda i=i: released.append(i)))
    with pytest.raises(KeyError):
        writer.close()
    assert sorted(released) == [0, 1, 2, 3]
    shards.abort()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_copies_land_in_pinned_buffers_and_match_the_cpu_model(recorder_parts):
    model, adapter = recorder_parts
    ids_BS = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(0))
    with BatchRecorder(model, adapter, [0, 1, 2], False, 12) as recorder:
        expected = recorder(ids_BS, 0)
    gpu_model = tiny_model("olmoe").cuda()
    with BatchRecorder(gpu_model, get_adapter(gpu_model), [0, 1, 2], False, 12) as recorder:
        pending = recorder.record(ids_BS, 0)
        assert all(t.is_pinned() for t in pending._layered.values())
        columns = pending.columns()
        assert np.array_equal(columns["expert_ids"], expected["expert_ids"])
        np.testing.assert_allclose(columns["hidden"].astype(np.float32), expected["hidden"].astype(np.float32),
                                   atol=1e-2)  # fmt: skip
        pending.release()
