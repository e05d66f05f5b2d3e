"""The runtime's host work per MoE layer: the packed device-to-host read (one copy per layer, every bit kept) and an
upper bound on the torch ops the engine adds per decode layer (counted with torch.profiler: not a timing).

The CUDA read path (`OffloadEngine._read`) runs here on CPU with its event and pinned buffer stood in for, so its
packing, its one copy per layer and the tokens it gives are checked without a GPU."""

from __future__ import annotations

import pytest
import torch
from tiny_moe import TINY_FAMILIES, greedy, tiny_model

import runtime
from runtime.host_read import PackedReader
from specmd_predict.adapters import get_adapter
from tests.project_scripts import load_script

ops = load_script("benchmarks/runtime_ops.py")


@pytest.mark.parametrize("rows, k", [(1, 4), (2, 3), (1, 1), (3, 5)])
def test_one_packed_copy_gives_back_every_tensor_bit_for_bit(rows, k):
    generator = torch.Generator().manual_seed(rows * 10 + k)
    ids_TK = torch.randint(0, 64, (1, 8), generator=generator)
    scores_RK = torch.rand(rows, k, generator=generator)
    scores_RK[0, 0] = 1e-40  # a subnormal float: bits, not values, are copied
    top_ids_RK = torch.randint(0, 2**40, (rows, k), generator=generator)  # beyond float32's exact integers
    reader = PackedReader(pin=False)
    for prepared in ([], [scores_RK, top_ids_RK], [torch.rand(rows, 2, 16, generator=generator)]):
        tensors = [ids_TK, *prepared]
        for _ in range(2):  # the second call reuses the first one's plan (and host views)
            hosts = reader.copy(tensors)
            assert len(hosts) == len(tensors)
            for host, t in zip(hosts, tensors, strict=True):
                assert host.dtype == t.dtype and torch.equal(host, t) and host.data_ptr() != t.data_ptr()
    assert reader.copy([ids_TK, torch.zeros(3, dtype=torch.float16)]) is None  # 2-byte elements: not packed


@pytest.mark.parametrize("prefetch", ["none", "router-reuse"])
def test_the_cuda_read_path_reads_once_per_layer_and_keeps_the_tokens(prefetch, monkeypatch):
    """The engine's CUDA read path, run on CPU (benchmarks/runtime_ops.py `cuda_read_path`): the same tokens as the
    plain model and, per MoE layer call, one read and ONE copy (the ids, with router reuse's top-k packed in)."""
    model = tiny_model("olmoe")
    ids = torch.randint(1, 128, (1, 10), generator=torch.Generator().manual_seed(3))
    expected = greedy(model, ids)
    offloaded = runtime.offload(model, capacity=1.0, eviction="fld", prefetch=prefetch, horizon=1, device="cpu")
    copies = []
    real_copy = torch.Tensor.copy_

    def counting_copy(self, src, non_blocking=False):
        if non_blocking:  # on CPU only the read copies non-blocking
            copies.append(self.numel())
        return real_copy(self, src, non_blocking)

    with ops.cuda_read_path(offloaded) as engine:
        monkeypatch.setattr(torch.Tensor, "copy_", counting_copy)
        tokens = greedy(offloaded, ids)
        monkeypatch.undo()
    assert torch.equal(tokens, expected)
    num_layers = get_adapter(offloaded).num_layers
    assert engine.host_reads == engine.num_passes * num_layers > 0
    assert len(copies) == engine.host_reads


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_the_cuda_read_path_keeps_every_familys_tokens_with_misses_and_a_batch(family):
    """Batch 2 (the prediction's full [R, 2, E] rows, packed flat) at 30% (misses, evictions, slot-table writes)."""
    model = tiny_model(family)
    ids = torch.randint(1, 128, (2, 10), generator=torch.Generator().manual_seed(3))
    expected = greedy(model, ids)
    offloaded = runtime.offload(model, capacity=0.3, eviction="fld", prefetch="router-reuse", horizon=1, device="cpu")
    with ops.cuda_read_path(offloaded) as engine:
        tokens = greedy(offloaded, ids)
    assert torch.equal(tokens, expected)
    assert engine.host_reads == engine.num_passes * get_adapter(offloaded).num_layers > 0


def test_the_engine_adds_few_torch_ops_per_decode_layer():
    """All hits (capacity 1.0, the same generation replayed): on-demand adds the slot-table lookup and the gather
    (2 kernels) plus host-only views; router reuse adds its later router (linear, softmax, topk) and the host
    reads of its top-k. The bounds are today's counts (benchmarks/runtime_ops.py): an added op per layer fails."""
    ops = load_script("benchmarks/runtime_ops.py")
    model = tiny_model("olmoe")
    result = ops.ops_per_layer(model, capacity=1.0, eviction="fld", steps=3)
    assert result["on-demand"]["added_ops_per_layer"] <= 5
    assert result["offloaded"]["added_ops_per_layer"] <= 12
    added = result["offloaded"]["added_by_op_per_step"]
    num_layers = get_adapter(model).num_layers
    assert added.get("aten::index_select", 0) <= 2 * num_layers  # slot table + gather, nothing else
    assert "aten::copy_" not in added and "aten::fill_" not in added  # nothing moved: no copy, no table write


@pytest.mark.parametrize("argv", [["--capacity", "1.5"], ["--steps", "0"], ["--baseline", "no-such-revision-xyz"]])
def test_the_ops_benchmark_refuses_bad_options_with_one_line(argv, capsys):
    assert ops.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
