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
    torch.cuda.synchronize()
    assert sorted(transfers.finished()) == [ExpertKey(1, 1), ExpertKey(1, 5), ExpertKey(1, 7)]
    assert not transfers.in_flight and transfers.copies == 3
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
    assert stats.late_prefetches == 0 and stats.misses > 0 and stats.evictions == 0 and stats.stall_s >= 0
    assert runtime.offload_engine(on_demand).transfers.waits > 0  # the compute stream waited for the misses


class _HostWaits:
    """Counts every host wait on the GPU (stream, event and device synchronizations: `.item()`, `.tolist()`,
    pageable copies and explicit `Event.synchronize()` alike) through torch's GPU trace callbacks, while on."""

    count = 0
    on = False
    registered = False

    @classmethod
    def install(cls) -> None:
        if cls.registered:
            return
        from torch.cuda import _gpu_trace

        def bump(*_args) -> None:
            if cls.on:
                cls.count += 1

        torch._C._activate_gpu_trace()  # stays on for the process: the callbacks count only while `on`
        _gpu_trace.register_callback_for_stream_synchronization(bump)
        _gpu_trace.register_callback_for_event_synchronization(bump)
        _gpu_trace.register_callback_for_device_synchronization(bump)
        cls.registered = True


def _decode_steps(model, ids: torch.Tensor, steps: int) -> tuple[list[int], list[int], list[list[int]]]:
    """Greedy decode with a KV cache, the next token kept on the device. Per step: implicit syncs (sync debug
    mode warnings), all host waits (GPU trace), and the tokens (read after the step, outside the counts)."""
    import warnings

    from transformers import DynamicCache

    _HostWaits.install()
    cache = DynamicCache(config=model.config)
    implicit, waits, tokens = [], [], []
    with torch.inference_mode():
        token = model(input_ids=ids, cache=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        for _ in range(steps):
            _HostWaits.count, _HostWaits.on = 0, True
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    token = model(input_ids=token, cache=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                _HostWaits.on = False
            implicit.append(sum("synchroniz" in str(w.message) for w in caught))
            waits.append(_HostWaits.count)
            tokens.append(token.flatten().tolist())
    return implicit, waits, tokens


@pytest.mark.parametrize("prefetch", ["none", "router-reuse"])
def test_at_most_one_blocking_read_per_moe_layer_per_decode_step(prefetch):
    """Per decode step the offloaded model waits on the GPU at most once per MoE layer more than the plain
    model does, and every such wait is the engine's explicit one (no implicit sync: same sync-debug count)."""
    model = tiny_model("olmoe")
    ids = prompt_ids()[:1].cuda()
    plain_implicit, plain_waits, plain_tokens = _decode_steps(copy.deepcopy(model).cuda(), ids, steps=6)
    offloaded = runtime.offload(model, capacity=0.5, prefetch=prefetch, device="cuda")
    engine = runtime.offload_engine(offloaded)
    num_layers = get_adapter(offloaded).num_layers
    implicit, waits, tokens = _decode_steps(offloaded, ids, steps=6)
    assert tokens == plain_tokens
    assert implicit == plain_implicit  # nothing implicit of ours: no .item(), .tolist(), bool() or pageable copy
    for step, (mine, theirs) in enumerate(zip(waits, plain_waits, strict=True)):
        assert mine - theirs <= num_layers, (step, mine, theirs)
    assert engine.host_reads == 7 * num_layers  # the prefill pass and 6 decode steps, one read per MoE layer


def test_stall_is_timed_with_events_and_every_copy_is_one_expert():
    model = tiny_model("qwen3_moe")
    ids = prompt_ids().cuda()
    offloaded = runtime.offload(model, capacity=0.3, horizon=2, device="cuda")
    greedy(offloaded, ids, max_new_tokens=6)
    engine = runtime.offload_engine(offloaded)
    assert engine.transfers.waits > 0 and (engine.transfers._timed or engine.transfers._stall_s)  # timed waits
    stats = runtime.offload_stats(offloaded)
    assert stats.stall_s >= 0 and stats.host_reads == stats.passes * get_adapter(offloaded).num_layers
    assert stats.copies == stats.misses + stats.prefetches_issued
