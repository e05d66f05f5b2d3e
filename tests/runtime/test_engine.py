"""The engine's hot-path order on CPU: demand copies first, then prefetch, then the wait; the next token's
first layer prefetched from the last; one copy per expert; offload()'s option checks.

Run: pytest tests/runtime/test_engine.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_moe import greedy, tiny_model
from tiny_moe import prompt_ids as make_prompt_ids

import runtime
from runtime.expert_cache import HIT, LATE
from runtime.policies.lru import LRU
from runtime.stats import CACHE_COUNTERS
from runtime.transfers import Transfers
from specmd_predict.adapters import get_adapter
from specmd_predict.routing import ExpertKey


class RecordingTransfers(Transfers):
    """Transfers that log the order of the engine's calls: ("demand", layer), ("prefetch", key), ("ready", layer)."""

    def __init__(self, store, pool):
        super().__init__(store, pool)
        self.log: list[tuple] = []

    def demand(self, layer, keys_slots):
        if keys_slots:
            self.log.append(("demand", layer))
        super().demand(layer, keys_slots)

    def prefetch(self, key, slot):
        self.log.append(("prefetch", key))
        return super().prefetch(key, slot)

    def ready(self, layer, slots):
        self.log.append(("ready", layer))
        super().ready(layer, slots)


def recorded(model, **offload_kwargs):
    offloaded = runtime.offload(copy.deepcopy(model), **offload_kwargs)
    engine = runtime.offload_engine(offloaded)
    engine.transfers = RecordingTransfers(engine.store, engine.pool)
    return offloaded, engine


def test_prefetch_is_issued_after_the_demand_copies_and_before_the_wait():
    model = tiny_model("olmoe")
    prompt_ids = make_prompt_ids()
    reference = greedy(model, prompt_ids)
    offloaded, engine = recorded(model, capacity=0.3, horizon=2)
    assert torch.equal(greedy(offloaded, prompt_ids), reference)
    log = engine.transfers.log
    assert any(kind == "prefetch" for kind, _ in log)
    layer_calls, current = [], []
    for entry in log:  # split the log into experts calls: each ends with its "ready"
        current.append(entry)
        if entry[0] == "ready":
            layer_calls.append(current)
            current = []
    with_prefetch = [call for call in layer_calls if any(kind == "prefetch" for kind, _ in call)]
    assert with_prefetch
    for call in with_prefetch:
        kinds = [kind for kind, _ in call]
        assert kinds[-1] == "ready"  # every prefetch of the call was issued before the wait
        if "demand" in kinds:
            assert kinds.index("demand") < kinds.index("prefetch")  # and behind the demand copies
        layer = call[-1][1]
        assert all(key.layer in (layer + 1, layer + 2) or key.layer == 0 for kind, key in call if kind == "prefetch")


def test_the_last_layer_prefetches_the_next_tokens_first_layer_and_it_gets_used():
    model = tiny_model("olmoe")
    prompt_ids = make_prompt_ids()
    offloaded, engine = recorded(model, capacity=0.5)
    last = get_adapter(offloaded).num_layers - 1
    statuses: list[tuple[ExpertKey, str]] = []
    request = engine.cache.request

    def recording_request(key):
        access = request(key)
        statuses.append((key, access.status))
        return access

    engine.cache.request = recording_request
    request_group = engine.cache.request_group  # the batched path (policies that allow it) skips `request`

    def recording_group(keys):
        resident = [key for key in keys if key in engine.cache]
        misses = request_group(keys)
        if misses is not None:  # None: done per request instead (recorded above)
            statuses.extend((key, HIT) for key in resident)
        return misses

    engine.cache.request_group = recording_group
    from_last: set[ExpertKey] = set()
    prefetch = engine.transfers.prefetch

    def recording_prefetch(key, slot):
        if engine.cache.layer == last:
            from_last.add(key)
        return prefetch(key, slot)

    engine.transfers.prefetch = recording_prefetch
    reference = greedy(model, prompt_ids)
    assert torch.equal(greedy(offloaded, prompt_ids), reference)
    assert from_last and all(key.layer == 0 for key in from_last)
    used = {key for key, status in statuses if key in from_last and status in (HIT, LATE)}
    assert used, "no expert prefetched from the last layer was found resident at the next token's layer 0"


def test_one_copy_per_expert_from_one_contiguous_host_row():
    model = tiny_model("gpt_oss")  # four stacked tensors per expert (weights and biases)
    offloaded = runtime.offload(copy.deepcopy(model), capacity=0.4, eviction="lru")
    greedy(offloaded, make_prompt_ids(), max_new_tokens=4)
    engine = runtime.offload_engine(offloaded)
    stats = runtime.offload_stats(offloaded)
    assert stats.copies == stats.misses + stats.prefetches_issued
    adapter = get_adapter(offloaded)
    names = adapter.expert_tensor_names()
    assert len(names) == 4
    row = engine.store.row(1, 3)
    assert row.is_contiguous() and row.dtype == torch.uint8
    for name in names:  # the module's own parameters are views of the host rows
        param = getattr(adapter.experts(1), name)
        assert param.untyped_storage().data_ptr() == engine.store.rows[1].untyped_storage().data_ptr()
        assert torch.equal(param, getattr(get_adapter(model).experts(1), name))


def untouched(model: torch.nn.Module) -> dict[str, int]:
    return {name: p.data_ptr() for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon": 0}, "horizon must be an int in 1..2"),
        ({"horizon": -1}, "horizon must be an int in 1..2"),
        ({"horizon": 3}, "horizon must be an int in 1..2"),
        ({"horizon": True}, "horizon must be an int"),
        ({"horizon": 1.5}, "horizon must be an int"),
        ({"prefetch_budget": -1}, "prefetch_budget must be an int >= 0"),
        ({"prefetch": "predictor"}, "prefetch='predictor' needs a predictor bank"),
        ({"capacity": 0.01}, "fewer than the 3 \\(top-k\\)"),
    ],
)
def test_bad_options_are_one_clear_error_and_leave_the_model_untouched(kwargs, message):
    model = tiny_model("olmoe")
    before = untouched(model)
    with pytest.raises(ValueError, match=message):
        runtime.offload(model, **{"capacity": 0.5, **kwargs})
    assert untouched(model) == before and not runtime.dispatch.is_offloaded(model)


def test_a_zero_prefetch_budget_issues_no_prefetch_copy():
    model = tiny_model("olmoe")
    prompt_ids = make_prompt_ids()
    offloaded = runtime.offload(copy.deepcopy(model), capacity=0.5, prefetch_budget=0)
    assert torch.equal(greedy(offloaded, prompt_ids), greedy(model, prompt_ids))
    stats = runtime.offload_stats(offloaded)
    assert stats.prefetches_issued == 0 and stats.prefetches_over_budget > 0


class NextUseLRU(LRU):
    """LRU that records the next-use tables the driver forwards (see `EvictionPolicy.on_next_use`)."""

    name = "next-use-lru"

    def __init__(self):
        super().__init__()
        self.tables: list[tuple[int, torch.Tensor]] = []

    def on_next_use(self, layer, next_LE):
        self.tables.append((layer, next_LE))


class NextUsePredictor:
    """Router reuse plus a made-up next-use table: per token t, expert e of layer j is used in t + j + e steps."""

    kind = "next-use-test"
    predicts_next_use = True

    def __init__(self, adapter):
        from specmd_predict.predictors.router_reuse import RouterReusePredictor

        self.inner = RouterReusePredictor(adapter, horizon=1)
        self.horizon, self.num_layers, self.num_experts = 1, adapter.num_layers, adapter.num_experts

    def check_model(self, adapter):
        pass

    def to(self, device):
        return self

    def predict(self, layer, hidden_TD):
        return self.inner.predict(layer, hidden_TD)

    def predict_next_use(self, layer, hidden_TD):
        t_T = torch.arange(hidden_TD.shape[0], dtype=torch.float32)
        j_L = torch.arange(self.num_layers, dtype=torch.float32)
        e_E = torch.arange(self.num_experts, dtype=torch.float32)
        return t_T[:, None, None] + j_L[None, :, None] + e_E[None, None, :] + layer


def test_a_predicted_next_use_table_reaches_the_evictor_through_the_driver():
    model = tiny_model("olmoe")
    prompt_ids = make_prompt_ids()
    adapter = get_adapter(model)
    evictor = NextUseLRU()
    offloaded = runtime.offload(
        copy.deepcopy(model), predictors=NextUsePredictor(adapter), capacity=0.5, eviction=evictor, prefetch="predictor"
    )
    assert torch.equal(greedy(offloaded, prompt_ids, max_new_tokens=3), greedy(model, prompt_ids, max_new_tokens=3))
    assert len(evictor.tables) == 3 * adapter.num_layers  # every layer of every pass
    layer, next_LE = evictor.tables[1]
    assert layer == 1 and next_LE.shape == (adapter.num_layers, adapter.num_experts) and next_LE.device.type == "cpu"
    expected_LE = torch.arange(adapter.num_layers)[:, None] + torch.arange(adapter.num_experts)[None, :] + 1.0
    assert torch.equal(next_LE, expected_LE)  # the minimum over the prompt's tokens is token 0's


class CountingNextUsePredictor(NextUsePredictor):
    """NextUsePredictor that counts its next-use head's calls."""

    calls = 0

    def predict_next_use(self, layer, hidden_TD):
        self.calls += 1
        return super().predict_next_use(layer, hidden_TD)


def test_the_next_use_head_runs_only_for_an_evictor_that_reads_its_table():
    """An evictor without `on_next_use` (plain LRU) never gets a table, so the head is not run at all; the cache's
    counters and tokens are those of the same run with the head forced on."""
    model = tiny_model("olmoe")
    prompt_ids = make_prompt_ids()
    adapter = get_adapter(model)
    runs = []
    for forced in (False, True):
        predictor = CountingNextUsePredictor(adapter)
        offloaded = runtime.offload(
            copy.deepcopy(model), predictors=predictor, capacity=0.5, eviction="lru", prefetch="predictor"
        )
        prefetcher = runtime.offload_engine(offloaded).prefetcher
        assert prefetcher.keep_next_use is False  # set by offload() from the evictor's hooks
        prefetcher.keep_next_use = forced
        tokens = greedy(offloaded, prompt_ids, max_new_tokens=3)
        stats = runtime.offload_stats(offloaded)
        runs.append((tokens, {name: getattr(stats, name) for name in CACHE_COUNTERS}, predictor.calls))
    (tokens, stats, calls), (forced_tokens, forced_stats, forced_calls) = runs
    assert calls == 0 and forced_calls == 3 * adapter.num_layers
    assert torch.equal(tokens, forced_tokens) and torch.equal(tokens, greedy(model, prompt_ids, max_new_tokens=3))
    assert stats == forced_stats and stats["prefetches_issued"] > 0  # every counter; stall time is the clock's


@pytest.mark.parametrize(
    "eviction, reads", [("least-stale-predicted", True), ("least-stale-predicted-heuristic", False)]
)
def test_of_the_least_stale_pair_only_the_one_that_orders_by_the_table_runs_the_head(eviction, reads):
    """The heuristic variant ignores tables (the base class's no-op hook), so the head is not run for it."""
    model = tiny_model("olmoe")
    adapter = get_adapter(model)
    predictor = CountingNextUsePredictor(adapter)
    offloaded = runtime.offload(
        copy.deepcopy(model), predictors=predictor, capacity=0.5, eviction=eviction, prefetch="predictor"
    )
    assert runtime.offload_engine(offloaded).prefetcher.keep_next_use is reads
    greedy(offloaded, make_prompt_ids(), max_new_tokens=2)
    assert predictor.calls == (2 * adapter.num_layers if reads else 0)
