"""Replay a trace's passes through the runtime's ExpertCache with an eviction x prefetch x capacity setting.

    result = simulate(trace, eviction="least-stale", prefetch="none", capacity=0.05)
    result = simulate(trace, "lru", capacity=0.25, layout="per-layer")                 # mixtral-offloading style
    result = simulate(trace, "belady", "router-reuse", 0.05, predictor=RouterReusePredictor(adapter, 1),
                      hardware=get_profile("h100-pcie"), shape=get_shape("mixtral-8x7b"))
    print(result.row())

Capacity is bytes (int) or a fraction of all expert bytes (float in (0, 1]); slots = capacity // expert bytes.
A layer needs its top-k experts resident at once, so fewer than top-k slots (per layer, in the per-layer
layout) is an error. Within a layer the requested experts are pinned as they arrive; when every slot holds
a pinned expert of this layer, that group counts as computed and is unpinned (prefill over a long prompt
can touch more experts than fit). Prefetches are proposed after a layer's demand requests and forwarded
as predictions to the evictor; eviction policies with `uses_current_routing = True` also get the current
layer's routed experts as probability-1 predictions (the runtime knows them once the router has run).

Without `hardware`, copies land at once (no late prefetches). With it, one FIFO copy engine runs beside
compute: demand misses stall the layer until their copies land, prefetches still in flight when demanded
are late, and TTFT (prefill pass time) / TPOT (mean decode pass time) come out of the same clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tqdm import tqdm

from eval.hardware import HardwareProfile, ModelShape
from eval.trace import Trace
from runtime.expert_cache import LATE, MISS, CacheStats, ExpertCache
from runtime.policies import make_eviction, make_prefetch

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


def resolve_capacity(capacity: float | int, expert_bytes: int, total_expert_bytes: int) -> tuple[int, int, float]:
    """(num_slots, capacity_bytes, fraction of all expert bytes) from bytes (int) or a fraction (float)."""
    if isinstance(capacity, bool) or not isinstance(capacity, int | float) or capacity <= 0:
        raise ValueError(f"capacity must be bytes (int > 0) or a fraction of all expert bytes, got {capacity!r}")
    if isinstance(capacity, float):
        if capacity > 1.0:
            raise ValueError(f"a float capacity is a fraction of all expert bytes, in (0, 1]; got {capacity}")
        capacity_bytes = int(capacity * total_expert_bytes)
    else:
        capacity_bytes = capacity
    num_slots = capacity_bytes // expert_bytes
    if num_slots < 1:
        raise ValueError(
            f"capacity {capacity!r} = {capacity_bytes} bytes is below one expert ({expert_bytes} bytes)"
        )
    return num_slots, capacity_bytes, capacity_bytes / total_expert_bytes


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
    progress: bool = False,
) -> SimResult:
    """Replay every pass of `trace`; see the module docstring for the model of time and pins.

    `proposals` memoizes the prefetch policy's answers per (pass, layer): they depend on the trace only, so
    a grid can share one dict per prefetch setting across evictions and capacities (pass {} to start one).
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
        kwargs = {"num_layers": num_layers, "num_experts": num_experts, **(eviction_kwargs or {})}
        if eviction == "belady":
            flat = trace.flat_requests()
            kwargs["future"] = flat if layer is None else [k for k in flat if k[0] == layer]
        return make_eviction(eviction, **kwargs)

    if layout == "global":
        cache = ExpertCache(num_slots, new_policy(None), expert_bytes, num_layers=num_layers)
        caches = [cache] * num_layers
        distinct = [cache]
    else:
        distinct = [ExpertCache(caches_slots[0], new_policy(j), expert_bytes, num_layers=num_layers)
                    for j in range(num_layers)]
        caches = distinct
    wants_routing = bool(getattr(distinct[0].eviction, "uses_current_routing", False))

    prefetcher = None
    if prefetch != "none":
        kwargs = {"predictor": predictor, "top_k": top_k, "num_layers": num_layers, **(prefetch_kwargs or {})}
        if "threshold" in kwargs:
            kwargs.pop("top_k")
        prefetcher = make_prefetch(prefetch, **kwargs)

    timed = hardware is not None
    copy_time = hardware.copy_time(expert_bytes) if timed else 0.0
    now = copy_free = stall = 0.0
    in_flight: dict = {}  # key -> time its copy lands
    ttft: list[float] = []
    tpot: list[float] = []

    def land(until: float, cache_of=caches) -> None:
        for key in [k for k, done in in_flight.items() if done <= until]:
            del in_flight[key]
            cache_of[key[0]].complete(key)

    passes = range(len(requests))
    for p in tqdm(passes, desc=f"{eviction}/{prefetch}@{fraction:.3g}", disable=not progress, leave=False):
        layers = requests[p]
        pass_start = now
        for c in distinct:
            c.start_pass()
        for layer, keys in enumerate(layers):
            c = caches[layer]
            slots = c.num_slots
            c.start_layer(layer)
            if wants_routing:
                c.predictions(dict.fromkeys(keys, 1.0))  # the layer's router has run: these, and only these
            if in_flight:
                land(now)
            ready = now
            pinned = 0
            for key in keys:
                if pinned >= slots:
                    c.unpin_all()  # this group of experts is computed; the next group reuses the slots
                    pinned = 0
                if in_flight and key not in c and c.num_free == 0 and pinned + c.num_in_flight >= slots:
                    # every slot is pinned or receiving a copy: wait for this cache's earliest copy to land
                    ready = max(ready, min(d for k, d in in_flight.items() if caches[k[0]] is c))
                    land(ready)
                access = c.request(key)
                status = access[1]
                if status == MISS:
                    if timed:
                        copy_free = max(now, copy_free) + copy_time
                        ready = max(ready, copy_free)
                elif status == LATE:
                    ready = max(ready, in_flight.pop(key))
                    c.complete(key)
                c.pin(key)
                pinned += 1
            stall += ready - now
            now = ready
            if prefetcher is not None:
                proposal = proposals.get((p, layer)) if proposals is not None else None
                if proposal is None:
                    candidates = prefetcher.propose(layer, trace.hidden(p, layer), trace.routing(p, layer))
                    proposal = (candidates, getattr(prefetcher, "probabilities", None) or {})
                    if proposals is not None:
                        proposals[(p, layer)] = proposal
                candidates, probabilities = proposal
                if probabilities:
                    for target in distinct:
                        target.predictions(probabilities)
                for key, score in candidates:
                    if key[0] >= num_layers:
                        continue  # a predictor answering past the last layer: nothing to fetch
                    target = caches[key[0]]
                    if target.prefetch(key, score) is not None:
                        if timed:
                            copy_free = max(now, copy_free) + copy_time
                            in_flight[key] = copy_free
                        else:
                            target.complete(key)
            c.unpin_all()
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
