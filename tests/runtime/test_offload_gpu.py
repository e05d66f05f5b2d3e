"""The CUDA path of the runtime: pinned host experts, a device slot pool, prefetch copies on a side stream.

Run: pytest -m gpu tests/runtime/test_offload_gpu.py   (skipped without a CUDA device)
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_moe import greedy, prompt_ids, tiny_model

import runtime
from runtime.store import HostExpertStore, SlotPool
from runtime.transfers import Transfers
from specmd_predict.adapters import get_adapter
from specmd_predict.routing import ExpertKey

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "gpt_oss"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_generation_on_cuda_is_identical(family, dtype):
    model = tiny_model(family).to(dtype)
    ids = prompt_ids().cuda()
    reference = greedy(copy.deepcopy(model).cuda(), ids, max_new_tokens=12)
    offloaded = runtime.offload(model, capacity=0.3, device="cuda")
    assert torch.equal(greedy(offloaded, ids, max_new_tokens=12), reference)
    adapter = get_adapter(offloaded)
    engine = runtime.offload_engine(offloaded)
    for name in adapter.expert_tensor_names():
        assert getattr(adapter.experts(0), name).is_pinned()
        assert engine.pool.tensors[name].is_cuda
    assert adapter.router(0).weight.is_cuda and offloaded.get_input_embeddings().weight.is_cuda
    shared = adapter.shared_experts(0)
    assert shared is None or all(p.is_cuda for p in shared.parameters())  # always resident
    stats = runtime.offload_stats(offloaded)
    assert stats.prefetches_issued > 0 and stats.hits + stats.misses + stats.late_prefetches == stats.requests
    assert not engine.transfers.in_flight or all(k in engine.cache for k in engine.transfers.in_flight)


def test_prefetch_copies_land_in_their_slots():
    model = tiny_model("olmoe")
    adapter = get_adapter(model)
    store = HostExpertStore.take(adapter, pin=True)
    pool = SlotPool(store, num_slots=4, device=torch.device("cuda"))
    transfers = Transfers(store, pool)
    for slot, expert in enumerate([5, 1, 7]):
        assert transfers.prefetch(ExpertKey(1, expert), slot)  # asynchronous on CUDA
    transfers.wait_all()
    assert not transfers.in_flight
    for slot, expert in enumerate([5, 1, 7]):
        for name, tensor in store.expert(1, expert).items():
            assert torch.equal(pool.tensors[name][slot].cpu(), tensor)


def test_demand_misses_and_late_prefetches_are_counted_on_cuda():
    """Without prefetch every first use is a miss; with prefetch some arrive in time, none is lost."""
    model = tiny_model("qwen3_moe")
    ids = prompt_ids().cuda()
    reference = greedy(copy.deepcopy(model).cuda(), ids, max_new_tokens=6)
    on_demand = runtime.offload(copy.deepcopy(model), capacity=1.0, eviction="lru", prefetch="none", device="cuda")
    assert torch.equal(greedy(on_demand, ids, max_new_tokens=6), reference)
    stats = runtime.offload_stats(on_demand)
    assert stats.late_prefetches == 0 and stats.misses > 0 and stats.evictions == 0 and stats.stall_s > 0
