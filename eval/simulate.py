"""Replay a trace's passes through the runtime's ExpertCache with an eviction x prefetch x capacity setting.

    result = simulate(trace, eviction="least-stale", prefetch="none", capacity=0.05)
    result = simulate(trace, "lru", capacity=0.25, layout="per-layer")                 # mixtral-offloading style
    result = simulate(trace, "belady", "router-reuse", 0.05, predictor=RouterReusePredictor(adapter, 1),
                      hardware=get_profile("h100-pcie"), shape=get_shape("mixtral-8x7b"))
    print(result.row())

Capacity is bytes (int) or a fraction of all expert bytes (float in (0, 1]); slots = capacity // expert bytes
(`runtime.driver.resolve_capacity`, the runtime's rule). A layer needs its top-k experts resident at once, so
fewer than top-k slots (per layer, in the per-layer layout) is an error.

Every cache decision (request order, current routing to the evictor, groups when a layer needs more experts
than slots, waiting for a free slot, prefetch issue under `prefetch_budget`, counters) is the runtime's own
cache driver (`runtime.driver.CacheDriver`), so a routing recorded from the runtime replays to the same
counters (tests/eval/test_driver_parity.py). What differs is the transport, `ReplayClock` below: without
`hardware`, copies land at once (no late prefetches). With it, one FIFO copy engine runs beside compute:
demand misses stall the layer until their copies land, prefetches still in flight when demanded are late,
a full cache waits for its earliest copy, and TTFT (prefill pass time) / TPOT (mean decode pass time) come
out of the same clock.

A bank whose next-pass head holds a token table prefetches MoE layer 0 of pass p at pass p's start, from its input
tokens and pass p - 1's last MoE layer (the runtime's pass-start hook, runtime/pass_start.py), where the trace has
token ids (`token_id`: harvests; external traces may lack them, then the last MoE layer proposes from its state).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm import tqdm

from eval.hardware import HardwareProfile, ModelShape
from eval.trace import Trace
from runtime.driver import CacheDriver, resolve_capacity
from runtime.expert_cache import CacheStats, ExpertCache
from runtime.policies import make_eviction, make_prefetch
from specmd_predict.predictors.row_tokens import rows_token_ids
from specmd_predict.routing import ExpertKey

LAYOUTS = ("global", "per-layer")


@dataclass
class SimResult:
    """Counters and (with a hardware profile) timings of one configuration."""

    eviction: str
    prefetch: str
    layout: str
    capacity_bytes: int
    capacity_fraction: float
    num_slots: int
    stats: CacheStats
    timing: dict = field(default_factory=dict)

    def row(self) -> dict:
        """Flat scalar metrics for tables and CSV."""
        s = self.stats
        row = {
            "eviction": self.eviction,
            "prefetch": self.prefetch,
            "layout": self.layout,
            "capacity_fraction": round(self.capacity_fraction, 6),
            "capacity_bytes": self.capacity_bytes,
            "num_slots": self.num_slots,
            "requests": s.requests,
            "hits": s.hits,
            "misses": s.misses,
            "hit_rate": s.hit_rate,
            "late_prefetches": s.late_prefetches,
            "collision_misses": s.collision_misses,
            "collision_rate": s.collision_misses / s.requests if s.requests else 0.0,
            "prefetches_issued": s.prefetches_issued,
            "prefetch_precision": s.prefetch_precision,
            "prefetch_recall": s.prefetch_recall,
            "bytes_moved": s.bytes_moved,
        }
        row.update(self.timing)
        return row

    def as_dict(self) -> dict:
        return {**self.row(), "per_layer": {k: v for k, v in self.stats.as_dict().items() if k.startswith("layer_")}}


def _memoized(proposals: dict | None, key: tuple, make: Callable[[], tuple]) -> tuple:
    """`proposals[key]`, made by `make()` the first time (`proposals` None: made every time, nothing kept)."""
    proposal = proposals.get(key) if proposals is not None else None
    if proposal is None:
        proposal = make()
        if proposals is not None:
            proposals[key] = proposal
    return proposal


def _proposal(prefetcher, trace: Trace, p: int, layer: int, proposals: dict | None) -> tuple:
    """(candidates, probabilities, next_use) of the prefetch policy at (pass p, layer), memoized in `proposals`."""

    def make() -> tuple:
        with rows_token_ids([prefetcher], trace.token_ids(p)):  # hash-routed layers' router reuse reads them
            candidates = prefetcher.propose(layer, trace.hidden(p, layer), trace.routing(p, layer))
        return candidates, getattr(prefetcher, "probabilities", None), getattr(prefetcher, "next_use", None)

    return _memoized(proposals, (p, layer), make)


def _pass_start_proposal(prefetcher, trace: Trace, p: int, proposals: dict | None) -> tuple:
    """(candidates, probabilities) for MoE layer 0 of pass p from its input tokens and pass p - 1's last MoE layer
    (runtime/pass_start.py's prefetch, replayed), memoized in `proposals` under (p, -1)."""

    def make() -> tuple:
        hidden_TD = trace.hidden(p - 1, trace.num_layers - 1)
        candidates = prefetcher.propose_pass_start(trace.token_ids(p), hidden_TD)
        return candidates, getattr(prefetcher, "probabilities", None)

    return _memoized(proposals, (p, -1), make)


class ReplayClock:
    """The simulator's transport for the cache driver (runtime/driver.py): copies on a modeled clock."""

    def __init__(self, cache_of_layer: list[ExpertCache], copy_time: float | None):
        self.cache_of_layer = cache_of_layer
        self.copy_time = copy_time  # None: copies land at once
        self.now = self.ready = self.copy_free = 0.0
        self.in_flight: dict[ExpertKey, float] = {}  # key -> time its copy lands

    def start_layer(self, now: float) -> None:
        self.now = self.ready = now

    def finished(self) -> list[ExpertKey]:
        if not self.in_flight:
            return []
        done = [k for k, t in self.in_flight.items() if t <= self.now]
        for key in done:
            del self.in_flight[key]
        return done

    def land_for_slot(self, cache: ExpertCache) -> list[ExpertKey]:
        """Wait for this cache's earliest copy to land (it frees a slot), then land whatever has landed by then."""
        mine = [t for k, t in self.in_flight.items() if self.cache_of_layer[k[0]] is cache]
        if not mine:
            return []
        self.ready = max(self.ready, min(mine))
        done = [k for k, t in self.in_flight.items() if t <= self.ready]
        for key in done:
            del self.in_flight[key]
        return done

    def late(self, key: ExpertKey) -> None:
        self.ready = max(self.ready, self.in_flight.pop(key))

    def demand(self, layer: int, misses: list) -> None:
        if self.copy_time is None:
            return
        for _ in misses:
            self.copy_free = max(self.now, self.copy_free) + self.copy_time
            self.ready = max(self.ready, self.copy_free)

    def prefetch(self, key: ExpertKey, slot: int) -> bool:
        if self.copy_time is None:
            return False
        self.copy_free = max(self.now, self.copy_free) + self.copy_time
        self.in_flight[key] = self.copy_free
        return True


def simulate(
    trace: Trace,
    eviction: str = "lru",
    prefetch: str = "none",
    capacity: float | int = 0.05,
    *,
    layout: str = "global",
    expert_bytes: int | None = None,
    hardware: HardwareProfile | None = None,
    shape: ModelShape | None = None,
    predictor=None,
    eviction_kwargs: dict | None = None,
    prefetch_kwargs: dict | None = None,
    proposals: dict | None = None,
    prefetch_budget: int | None = None,
    progress: bool = False,
) -> SimResult:
    """Replay every pass of `trace`; see the module docstring for the model of time and pins.

    `proposals` memoizes the prefetch policy's answers per (pass, layer): they depend on the trace only, so
    a grid can share one dict per prefetch setting across evictions and capacities (pass {} to start one).
    `prefetch_budget`: at most this many prefetch copies per predicted layer (None: no limit; the runtime's
    default is top-k).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown cache layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if hardware is not None and shape is None:
        raise ValueError("hardware timing needs a model shape (eval.hardware.get_shape or ModelShape.from_config)")
    num_layers, num_experts, top_k = trace.num_layers, trace.num_experts, trace.top_k
    if expert_bytes is None:
        expert_bytes = shape.expert_bytes if shape else int(trace.manifest.get("model", {}).get("expert_bytes", 1))
    total_bytes = num_layers * num_experts * expert_bytes
    num_slots, capacity_bytes, fraction = resolve_capacity(capacity, expert_bytes, total_bytes)
    requests = trace.requests()

    if layout == "global":
        caches_slots = [num_slots]
    else:
        caches_slots = [num_slots // num_layers] * num_layers
    need = top_k
    if min(caches_slots) < need:
        where = "one cache" if layout == "global" else f"each of {num_layers} per-layer caches"
        raise ValueError(
            f"capacity {capacity!r} gives {where} {min(caches_slots)} expert slots, below one layer's needs "
            f"(top-{need} experts of a token); raise the capacity"
        )

    def new_policy(layer: int | None):
        kwargs = {"num_layers": num_layers, "num_experts": num_experts, "top_k": top_k, **(eviction_kwargs or {})}
        if eviction == "belady":
            flat = trace.flat_requests()
            kwargs["future"] = flat if layer is None else [k for k in flat if k[0] == layer]
        return make_eviction(eviction, **kwargs)

    if layout == "global":
        cache = ExpertCache(num_slots, new_policy(None), expert_bytes, num_layers=num_layers)
        caches = [cache] * num_layers
        distinct = [cache]
    else:
        distinct = [
            ExpertCache(caches_slots[0], new_policy(j), expert_bytes, num_layers=num_layers) for j in range(num_layers)
        ]
        caches = distinct

    prefetcher = None
    if prefetch != "none":
        kwargs = {"predictor": predictor, "top_k": top_k, "num_layers": num_layers, **(prefetch_kwargs or {})}
        if "threshold" in kwargs:
            kwargs.pop("top_k")
        prefetcher = make_prefetch(prefetch, **kwargs)
    # a token-table bank scores the next pass's layer 0 when that pass starts, from its input tokens (as the runtime
    # does, runtime/pass_start.py), where the trace has them and the last MoE layer's router input
    at_pass_start = (
        getattr(prefetcher, "uses_next_token", False)
        and trace.token_ids_N is not None
        and num_layers - 1 in trace.hidden_layers
    )
    if at_pass_start:
        prefetcher.token_at_pass_start = True

    timed = hardware is not None
    driver = CacheDriver(caches, prefetch_budget=prefetch_budget)
    clock = ReplayClock(caches, hardware.copy_time(expert_bytes) if timed else None)
    now = stall = 0.0
    ttft: list[float] = []
    tpot: list[float] = []

    passes = range(len(requests))
    if not timed and prefetcher is None:
        # nothing happens between layers (copies land at once, nothing is prefetched): the driver loops over a pass's
        # layers itself, asking the cache by the trace's key numbers (no ExpertKey hashed per request)
        numbering = trace.request_ids()
        for p in tqdm(passes, desc=f"{eviction}/none@{fraction:.3g}", disable=not progress, leave=False):
            driver.start_pass()
            driver.run_pass(requests[p], clock, numbering, p * num_layers)
    else:
        for p in tqdm(passes, desc=f"{eviction}/{prefetch}@{fraction:.3g}", disable=not progress, leave=False):
            layers = requests[p]
            pass_start = now
            driver.start_pass()
            if at_pass_start and p > 0:  # copies start at the pass boundary; nothing waits for them here
                clock.now = clock.ready = now
                driver.prefetch(0, *_pass_start_proposal(prefetcher, trace, p, proposals), transport=clock)
            for layer, keys in enumerate(layers):
                clock.now = clock.ready = now  # clock.start_layer(now), inlined: once per layer of every pass
                propose = None
                if prefetcher is not None:
                    propose = functools.partial(_proposal, prefetcher, trace, p, layer, proposals)
                driver.run_layer(layer, keys, clock, propose)
                stall += clock.ready - now
                now = clock.ready
                if timed:
                    now += hardware.layer_time(shape, trace.pass_num_tokens(p), len(keys))
            if timed:
                (ttft if trace.pass_is_prefill[p] else tpot).append(now - pass_start)

    stats = distinct[0].stats
    for other in distinct[1:]:
        stats = stats.merge(other.stats)
    timing = {}
    if timed:
        timing = {
            "hardware": hardware.name,
            "shape": shape.name,
            "stall_s": stall,
            "total_s": now,
            "ttft_s": sum(ttft) / len(ttft) if ttft else 0.0,
            "tpot_s": sum(tpot) / len(tpot) if tpot else 0.0,
        }
    return SimResult(eviction, prefetch, layout, capacity_bytes, fraction, num_slots, stats, timing)
