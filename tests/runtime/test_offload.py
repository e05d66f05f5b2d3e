"""runtime.offload on tiny CPU models: same tokens as the unmodified model, exact counters, clear errors.

Run: pytest tests/runtime/test_offload.py
Each family in tiny_moe.TINY_FAMILIES is offloaded at a capacity that forces evictions; greedy generation
must match the unmodified model token for token.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_moe import TINY_FAMILIES, greedy, tiny_dense_model, tiny_llama4_model, tiny_model
from tiny_moe import prompt_ids as make_prompt_ids
from torch import nn
from transformers.models.olmoe.modeling_olmoe import OlmoeExperts

import runtime
from runtime.dispatch import OFFLOAD_IMPLEMENTATION
from runtime.offload import DEFAULT_EVICTION
from runtime.policies import EVICTION_POLICIES, PREFETCH_POLICIES
from runtime.transfers import Transfers
from specmd_predict.adapters import UnsupportedModelError, get_adapter
from specmd_predict.capture import record_routing
from specmd_predict.predictors import make_predictor, save_bank


@pytest.fixture
def prompt_ids() -> torch.Tensor:
    return make_prompt_ids()


def offloaded_copy(model: nn.Module, **kwargs) -> nn.Module:
    return runtime.offload(copy.deepcopy(model), **kwargs)


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_greedy_generation_is_identical(family, prompt_ids):
    model = tiny_model(family)
    reference = greedy(model, prompt_ids)
    offloaded = offloaded_copy(model, capacity=0.3)
    assert torch.equal(greedy(offloaded, prompt_ids), reference)
    stats = runtime.offload_stats(offloaded)
    assert stats.eviction == DEFAULT_EVICTION and stats.prefetch == "router-reuse"
    assert stats.passes == 8 and stats.requests > 0 and stats.evictions > 0
    assert stats.hits + stats.misses + stats.late_prefetches == stats.requests


def test_layer_needing_more_experts_than_slots_runs_in_chunks(prompt_ids):
    model = tiny_model("olmoe")
    adapter = get_adapter(model)
    reference = greedy(model, prompt_ids)
    # exactly top-k slots: a batch of two tokens usually needs more experts than that at one layer
    offloaded = offloaded_copy(model, capacity=adapter.top_k * adapter.expert_bytes(), eviction="lru", prefetch="none")
    assert torch.equal(greedy(offloaded, prompt_ids), reference)
    stats = runtime.offload_stats(offloaded)
    assert stats.num_slots == adapter.top_k and stats.hits + stats.misses == stats.requests


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_layer_needing_more_experts_than_slots_computes_exactly_like_the_model(dtype, prompt_ids):
    """The groups are staged and computed in one call: bit-identical logits, also in bf16 (where summing per-group
    outputs rounds differently and changed greedy tokens on an H200 at 5% capacity)."""
    model = tiny_model("olmoe").to(dtype)
    adapter = get_adapter(model)
    with torch.inference_mode():
        reference = model(input_ids=prompt_ids).logits
    offloaded = offloaded_copy(model, capacity=adapter.top_k * adapter.expert_bytes(), eviction="lru", prefetch="none")
    with torch.inference_mode():
        logits = offloaded(input_ids=prompt_ids).logits
    assert torch.equal(logits, reference)
    stats = runtime.offload_stats(offloaded)
    assert stats.misses > stats.num_slots * adapter.num_layers  # some layer really ran in several groups


def test_counters_match_the_routing_exactly(prompt_ids):
    """With room for every expert and no prefetch, each expert misses once, then always hits."""
    model = tiny_model("qwen3_moe")
    offloaded = offloaded_copy(model, capacity=1.0, eviction="lru", prefetch="none")
    adapter = get_adapter(offloaded)
    with record_routing(adapter, keep_inputs=False) as record:
        greedy(offloaded, prompt_ids, max_new_tokens=5)
    stats = runtime.offload_stats(offloaded)
    for layer, layer_stats in enumerate(stats.layers):
        per_pass = [set(r.expert_ids_TK.flatten().tolist()) for r in record.routings[layer]]
        assert layer_stats.requests == sum(len(used) for used in per_pass)
        assert layer_stats.misses == len(set().union(*per_pass))
        assert layer_stats.collision_misses == 0 and layer_stats.late_prefetches == 0
    assert stats.passes == 5 and stats.evictions == 0
    assert stats.bytes_moved == stats.misses * adapter.expert_bytes()


def test_experts_move_to_host_and_the_pool_holds_slots():
    model = tiny_model("qwen2_moe")
    shared_before = get_adapter(model).shared_experts(0).gate_proj.weight
    offloaded = offloaded_copy(model, capacity=0.5)
    adapter = get_adapter(offloaded)
    engine = runtime.offload_engine(offloaded)
    num_slots = adapter.num_layers * adapter.num_experts // 2
    for name in adapter.expert_tensor_names():
        stacked = getattr(adapter.experts(0), name)
        assert stacked.device.type == "cpu" and stacked.shape[0] == adapter.num_experts
        assert engine.pool.tensors[name].shape == (num_slots, *stacked.shape[1:])
    assert offloaded.config._experts_implementation == OFFLOAD_IMPLEMENTATION
    assert adapter.experts(0).config._experts_implementation == OFFLOAD_IMPLEMENTATION
    assert torch.equal(adapter.shared_experts(0).gate_proj.weight, shared_before)  # resident, untouched
    assert runtime.offload_stats(offloaded).capacity_fraction == pytest.approx(0.5)


def test_a_predictor_bank_directory_drives_prefetch(tmp_path, prompt_ids):
    model = tiny_model("olmoe")
    bank_dir = save_bank(make_predictor("residual", adapter=get_adapter(model), horizon=2), tmp_path / "bank")
    reference = greedy(model, prompt_ids)
    offloaded = offloaded_copy(model, predictors=bank_dir, capacity=0.4)
    assert torch.equal(greedy(offloaded, prompt_ids), reference)
    stats = runtime.offload_stats(offloaded)
    assert stats.prefetch == "predictor" and stats.prefetches_issued > 0 and stats.prefetches_used > 0


def test_stats_print_as_a_table_and_reset(prompt_ids):
    offloaded = offloaded_copy(tiny_model("mixtral"), capacity=0.3)
    greedy(offloaded, prompt_ids, max_new_tokens=3)
    stats = runtime.offload_stats(offloaded)
    text = str(stats)
    assert "hit rate" in text and "stall ms" in text and text.count("\n") >= len(stats.layers) + 3
    numbers = stats.as_dict()
    assert numbers["requests"] == stats.requests and len(numbers["layers"]) == 3
    runtime.reset_offload_stats(offloaded)
    assert runtime.offload_stats(offloaded).requests == 0 and runtime.offload_stats(offloaded).passes == 0


class PlainExperts(nn.Module):
    """OLMoE's experts without transformers' dispatch decorator: exercises the module-swap fallback."""

    def __init__(self, experts: nn.Module):
        super().__init__()
        self.num_experts = experts.num_experts
        self.gate_up_proj = experts.gate_up_proj
        self.down_proj = experts.down_proj
        self.act_fn = experts.act_fn

    forward = OlmoeExperts.forward.__wrapped__


def test_experts_without_the_registry_get_a_forward_swap(prompt_ids):
    model = tiny_model("olmoe")
    for layer in model.model.layers:
        layer.mlp.experts = PlainExperts(layer.mlp.experts)
    reference = greedy(model, prompt_ids)
    offloaded = offloaded_copy(model, capacity=0.3)
    assert torch.equal(greedy(offloaded, prompt_ids), reference)
    assert runtime.offload_stats(offloaded).requests > 0


# ---- bad input: a clear error, and nothing moved ------------------------------------------------------------
def assert_untouched(model: nn.Module, before: dict[str, int]) -> None:
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == before
    assert model.config._experts_implementation != OFFLOAD_IMPLEMENTATION
    assert not hasattr(model, "_specmd_offload_engine")


@pytest.mark.parametrize(
    ("capacity", "message"),
    [(2, r"fewer than the 3 \(top-k\)"), (0.01, "fewer than the 3"), (1.5, r"in \(0, 1\]"), ("1GB", r"bytes \(int\)")],
)
def test_bad_capacity_fails_before_any_weight_moves(capacity, message):
    model = tiny_model("olmoe")
    before = {name: p.data_ptr() for name, p in model.named_parameters()}
    with pytest.raises((ValueError, TypeError), match=message):
        runtime.offload(model, capacity=capacity)
    assert_untouched(model, before)


def test_a_bank_for_another_model_fails_before_any_weight_moves(tmp_path):
    other = tiny_model("olmoe", seed=1)
    bank_dir = save_bank(make_predictor("linear", adapter=get_adapter(other), horizon=2), tmp_path / "bank")
    model = tiny_model("olmoe")
    before = {name: p.data_ptr() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="different model.*router_fingerprint"):
        runtime.offload(model, predictors=bank_dir, capacity=0.5)
    assert_untouched(model, before)


def test_unknown_policy_names_fail_with_a_suggestion():
    model = tiny_model("olmoe")
    before = {name: p.data_ptr() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="(?i)did you mean 'lru'"):
        runtime.offload(model, capacity=0.5, eviction="lur")
    with pytest.raises(ValueError, match="unknown prefetch policy"):
        runtime.offload(model, capacity=0.5, prefetch="oracle")
    assert_untouched(model, before)


def test_a_dense_model_is_refused():
    with pytest.raises(UnsupportedModelError, match="supports MoE models of type"):
        runtime.offload(tiny_dense_model(), capacity=0.5)


def test_experts_without_routed_ids_are_refused_before_any_weight_moves():
    model = tiny_llama4_model()
    before = {name: p.data_ptr() for name, p in model.named_parameters()}
    with pytest.raises(UnsupportedModelError, match="only drives sparse experts"):
        runtime.offload(model, capacity=0.5)
    assert_untouched(model, before)


def test_offloading_twice_and_stats_of_a_plain_model_are_refused():
    model = runtime.offload(tiny_model("olmoe"), capacity=0.5)
    with pytest.raises(ValueError, match="already offloaded"):
        runtime.offload(model, capacity=0.5)
    with pytest.raises(ValueError, match="not offloaded"):
        runtime.offload_stats(tiny_model("olmoe"))


def test_a_model_sharing_the_config_object_keeps_running_as_before(prompt_ids):
    """Offloading sets the implementation on the (shared) config; a sibling model must not notice."""
    model = tiny_model("mixtral")
    sibling = copy.deepcopy(model)
    sibling.config = model.config
    for layer in sibling.model.layers:
        layer.mlp.experts.config = model.config
    reference = greedy(sibling, prompt_ids)
    runtime.offload(model, capacity=0.3)
    assert sibling.model.layers[0].mlp.experts.config._experts_implementation == OFFLOAD_IMPLEMENTATION
    assert torch.equal(greedy(sibling, prompt_ids), reference)
    assert torch.equal(greedy(model, prompt_ids), reference)


class _NeverDone:
    """A copy event that never reports landed when polled: every prefetch is still in flight when demanded."""

    def query(self) -> bool:
        return False


class SlowTransfers(Transfers):
    def prefetch(self, key, slot) -> bool:
        self.pool.load(slot, self.store.row(*key))
        self.in_flight[key] = _NeverDone()
        return True


def test_prefetches_still_in_flight_count_as_late_and_are_waited_for(prompt_ids):
    model = tiny_model("olmoe")
    reference = greedy(model, prompt_ids)
    offloaded = offloaded_copy(model, capacity=0.3)
    engine = runtime.offload_engine(offloaded)
    engine.transfers = SlowTransfers(engine.store, engine.pool)
    assert torch.equal(greedy(offloaded, prompt_ids), reference)
    stats = runtime.offload_stats(offloaded)
    assert stats.late_prefetches > 0 and stats.hits + stats.misses + stats.late_prefetches == stats.requests
    # no prefetch landed before its demand, except those the driver counted landed to free a slot
    assert stats.late_prefetches <= stats.prefetches_used <= stats.late_prefetches + engine.transfers.landed_by_force


RUNTIME_EVICTIONS = sorted(set(EVICTION_POLICIES) - {"belady"})  # belady needs the future: simulator only


@pytest.mark.parametrize(
    ("eviction", "prefetch"),
    [(name, "router-reuse") for name in RUNTIME_EVICTIONS]
    + [("least-stale-predicted", name) for name in sorted(set(PREFETCH_POLICIES) - {"predictor"})],
)
def test_every_policy_by_name_keeps_generation_identical(eviction, prefetch, prompt_ids):
    model = tiny_model("olmoe")
    reference = greedy(model, prompt_ids, max_new_tokens=5)
    offloaded = offloaded_copy(model, capacity=0.3, eviction=eviction, prefetch=prefetch)
    assert torch.equal(greedy(offloaded, prompt_ids, max_new_tokens=5), reference)
    stats = runtime.offload_stats(offloaded)
    assert (stats.eviction, stats.prefetch) == (eviction, prefetch) and stats.requests > 0
    if prefetch != "none":
        assert stats.prefetches_issued > 0


def test_belady_is_refused_in_the_runtime():
    with pytest.raises(ValueError, match="oracle"):
        runtime.offload(tiny_model("olmoe"), capacity=0.3, eviction="belady")


class _BrokenPredictor:
    kind = "broken"
    horizon = 1

    def check_model(self, adapter) -> None:
        pass

    def predict(self, layer, hidden_TD):
        raise AttributeError("no router weight")


def test_a_predictor_that_cannot_score_the_model_fails_before_any_weight_moves():
    model = tiny_model("olmoe")
    before = {name: p.data_ptr() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="broken predictor cannot score this olmoe model.*no router weight"):
        runtime.offload(model, predictors=_BrokenPredictor(), capacity=0.5)
    assert_untouched(model, before)


def test_more_than_1024_cached_experts_compute_over_the_layers_distinct_experts_only(prompt_ids):
    """4 layers x 300 experts = 1,200 slots at capacity 1.0 (grouped_mm groups at most 1,024 experts): the
    experts implementation sees only the layer's distinct experts, and the tokens stay identical."""
    from tests.tiny_models import NARROW_OLMOE
    from tests.tiny_models import tiny_model as shared_tiny_model

    model = shared_tiny_model("olmoe", **NARROW_OLMOE, num_hidden_layers=4, num_experts=300, eos_token_id=None)
    reference = greedy(model, prompt_ids, max_new_tokens=4)
    offloaded = offloaded_copy(model, capacity=1.0, eviction="lru", prefetch="none")
    engine = runtime.offload_engine(offloaded)
    seen: list[tuple[int, int]] = []  # (experts in the view, distinct expert ids in the call)
    real_compact = engine._compact

    def recording_compact(module, keys, slot_of, ids_TK):
        view, local_TK = real_compact(module, keys, slot_of, ids_TK)
        seen.append((view.num_experts, ids_TK.unique().numel()))
        return view, local_TK

    engine._compact = recording_compact
    assert torch.equal(greedy(offloaded, prompt_ids, max_new_tokens=4), reference)
    assert engine.pool.num_slots == 1200 and seen
    assert all(in_view == distinct for in_view, distinct in seen)


def test_the_probability_map_is_built_only_for_an_evictor_that_hears_it(prompt_ids):
    """select() skips the per-expert probability map when the evictor ignores predictions (fld); LSP gets it."""
    model = tiny_model("olmoe")
    reference = greedy(model, prompt_ids)
    for eviction, hears in (("fld", False), ("least-stale-predicted", True)):
        offloaded = runtime.offload(copy.deepcopy(model), capacity=0.5, eviction=eviction)
        prefetcher = runtime.offload_engine(offloaded).prefetcher
        assert prefetcher.keep_probabilities is hears
        assert torch.equal(greedy(offloaded, prompt_ids), reference)
        hidden_TD = torch.randn(1, get_adapter(offloaded).hidden_size)
        candidates = prefetcher.select(0, prefetcher.prepare(0, hidden_TD))
        assert candidates and bool(prefetcher.probabilities) is hears  # layer 1's map, or none
        assert runtime.offload_stats(offloaded).prefetches_issued > 0
