"""Every family the runtime drives generates the same tokens offloaded as the plain model; the others are refused.

Run: pytest tests/adapters/test_offload_families.py
Each tiny family of tests/tiny_models.py (~0.3 s each on CPU) is offloaded with room for one token's top-k and one
more expert in all (a prompt's layer needs more: it runs in groups; every pass evicts), with the default policies
(`runtime.offload.DEFAULT_EVICTION` eviction, router-reuse prefetch).
"""

from __future__ import annotations

import copy

import pytest
import torch

import runtime
from specmd_predict.adapters import UnsupportedModelError, get_adapter
from tests.tiny_models import FAMILIES, tiny_model

# experts modules not called with the routed ids (dense Llama 4 experts, fused DBRX and JetMoE matrices)
REFUSED = {"dbrx", "jetmoe", "llama4_text"}
MOE_FAMILIES = sorted(set(FAMILIES) - {"llama"})


def greedy(model: torch.nn.Module, prompt_BS: torch.Tensor) -> torch.Tensor:
    return model.generate(prompt_BS, max_new_tokens=4, do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_offloaded_generation_is_identical_or_refused(family):
    model = tiny_model(family, eos_token_id=None)  # no early stop: every generation runs to max_new_tokens
    adapter = get_adapter(model)
    capacity = (adapter.top_k + 1) * adapter.expert_bytes()  # bytes: one token's experts at one layer, and one more
    if family in REFUSED:
        with pytest.raises(UnsupportedModelError, match="only drives sparse experts"):
            runtime.offload(model, capacity=capacity)
        return
    prompt_BS = torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(1))
    reference = greedy(model, prompt_BS)
    offloaded = runtime.offload(copy.deepcopy(model), capacity=capacity)
    assert torch.equal(greedy(offloaded, prompt_BS), reference)
    stats = runtime.offload_stats(offloaded)
    # the runtime's clock counts a looped block's repetition as a pass (inkling2_loop_text)
    assert stats.passes == 4 * max(adapter.calls_per_forward(l) for l in range(adapter.num_layers))
    assert stats.requests > 0
    assert stats.hits + stats.misses + stats.late_prefetches == stats.requests
    if adapter.num_layers * adapter.top_k > stats.num_slots:  # one pass needs more (layer, expert) keys than slots
        assert stats.evictions > 0
