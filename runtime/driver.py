"""The one cache driver: how a MoE layer's routing becomes cache operations, in the simulator and the runtime.

    driver = CacheDriver(cache_of_layer, prefetch_budget=top_k)       # one ExpertCache per layer (or one shared)
    driver.start_pass()
    driver.run_layer(layer, needed_keys, transport, propose, compute)   # per MoE layer of the pass:
        # land finished copies; the evictor hears the routing; per group of <= num_slots: pin its residents,
        # request in ascending order, the misses' copies together; prefetch(propose()) at the last group;
        # compute; unpin

Both `eval/simulate.py` and `runtime/engine.py` call exactly this; what differs is the `transport` (the
`Transport` protocol below), the named place where copies happen: the simulator's clock (copies land at
once, or after a modeled copy time) or the runtime's `Transfers` (CUDA copies on a side stream). Decisions
made here, once:
- request order within a layer: ascending expert ids (what an oracle such as Belady is told in advance),
  with the layer's resident experts pinned before the first request, so that a miss never evicts an expert
  this layer is about to hit;
- current routing: every eviction policy hears the layer's routed experts as probability-1 predictions
  (the router has run; policies that do not use predictions ignore them), through `ExpertCache.hear_routing`,
  which for a layer of one group lets a policy that declares `routes_ids` (score) hear them by id inside the
  group's request_group, before its victims (the same additions, without a dict per layer);
- capacity to slots: `resolve_capacity` (fraction or bytes, at most one slot per routed expert);
- waiting for a free slot: when every slot is pinned by this group or receiving a copy, the transport lands
  copies (`land_for_slot`: the simulator the earliest, the runtime all of them in the books);
- groups: a layer needing more experts than there are slots runs in groups of at most `num_slots`;
- batching: a group is one `ExpertCache.request_group` call (one `victims(n)` and one `on_group` on the policy)
  when the policy declares `batched` and no copy is in flight in its cache, else pins and requests key by key;
  both give the same slots, counters and victims (tests/runtime/test_batched_requests.py), the batched one
  without Python per request (benchmarks/simulator.py);
- prefetch: candidates in the policy's order; resident ones are only told to a policy with `on_prefetch`; at most
  `prefetch_budget` copies per predicted layer (None: no limit); a layer index past the model is skipped;
  in one cache shared by every layer, only the first candidates that fit beside the pinned group are taken
  (`num_slots` minus the group; resident candidates count, they hold a slot too): a longer list cannot be
  resident at once, its later copies would evict the earlier ones of the same call, wasted whatever the evictor;
  the budget counts the layers the policy predicted, before that cut;
  the policy's probabilities (this pass's later layers) go to every cache's evictor;
- counters: the cache's own books, plus `prefetches_refused` (no evictable slot) and
  `prefetches_over_budget` here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import cython

from runtime.expert_cache import HIT, LATE, MISS, ExpertCache
from specmd_predict.policies import EvictionPolicy
from specmd_predict.routing import ExpertKey


class Transport(Protocol):
    """Where the copies happen: the simulator's clock or the runtime's Transfers."""

    in_flight: Mapping[ExpertKey, object]  # prefetch copies not yet landed in the books (any cache)

    def finished(self) -> list[ExpertKey]:
        """Prefetch copies that have landed since the last call."""

    def land_for_slot(self, cache: ExpertCache) -> list[ExpertKey]:
        """Every slot of `cache` is pinned or receiving a copy: land copies (at least one) and return their keys."""

    def late(self, key: ExpertKey) -> None:
        """`key`, still being prefetched, is demanded now: the demand waits for that copy."""

    def demand(self, layer: int, misses: list[tuple[ExpertKey, int]]) -> None:
        """Copy a layer's demand misses (key, slot), all together."""

    def prefetch(self, key: ExpertKey, slot: int) -> bool:
        """Start a prefetch copy; True if it is still in flight when this returns."""


def resolve_capacity(capacity: float | int, expert_bytes: int, total_expert_bytes: int) -> tuple[int, int, float]:
    """(num_slots, capacity_bytes, fraction of all expert bytes) from bytes (int) or a fraction (float in (0, 1]);
    never more slots than routed experts."""
    if isinstance(capacity, bool) or not isinstance(capacity, int | float):
        raise ValueError(f"capacity must be bytes (int > 0) or a fraction of all expert bytes, got {capacity!r}")
    if isinstance(capacity, float):
        if not 0.0 < capacity <= 1.0:
            raise ValueError(f"a fractional capacity must be in (0, 1], got {capacity}")
        capacity_bytes = int(capacity * total_expert_bytes)
    else:
        if capacity <= 0:
            raise ValueError(f"capacity must be bytes (int > 0) or a fraction of all expert bytes, got {capacity!r}")
        capacity_bytes = capacity
    num_slots = min(capacity_bytes // expert_bytes, total_expert_bytes // expert_bytes)
    if num_slots < 1:
        raise ValueError(f"capacity {capacity!r} = {capacity_bytes} bytes is below one expert ({expert_bytes} bytes)")
    return int(num_slots), int(capacity_bytes), capacity_bytes / total_expert_bytes


class CacheDriver:
    def __init__(self, cache_of_layer: Sequence[ExpertCache], prefetch_budget: int | None = None):
        if prefetch_budget is not None and (
            isinstance(prefetch_budget, bool) or not isinstance(prefetch_budget, int) or prefetch_budget < 0
        ):
            raise ValueError(f"prefetch_budget must be an int >= 0 or None, got {prefetch_budget!r}")
        self.cache_of_layer = list(cache_of_layer)
        self.caches = list({id(c): c for c in self.cache_of_layer}.values())  # distinct, in layer order
        self.num_layers = len(self.cache_of_layer)
        self.prefetch_budget = prefetch_budget
        # a policy that keeps EvictionPolicy's no-op on_predictions cannot use them: skip building them (speed)
        self._hears_predictions = [
            type(c.eviction).on_predictions is not EvictionPolicy.on_predictions for c in self.cache_of_layer
        ]
        # likewise on_prefetch: a resident candidate is told to a policy that keeps the no-op one only to be ignored
        # (a hook bound on the instance counts: LRU binds its on_prefetch in __init__)
        self._hears_prefetch = [
            "on_prefetch" in getattr(c.eviction, "__dict__", ())
            or type(c.eviction).on_prefetch is not EvictionPolicy.on_prefetch
            for c in self.cache_of_layer
        ]
        # ... which a policy declaring `routes_ids` hears by id inside its group (ExpertCache.hear_routing)
        self._routes_ids = [
            hears and c.routes_ids for hears, c in zip(self._hears_predictions, self.cache_of_layer, strict=True)
        ]
        self._shared = len(self.caches) == 1  # one cache for every layer: a prefetch competes with the pinned group
        self.prefetches_refused = 0  # no slot for a prefetch: every resident pinned or receiving a copy
        self.prefetches_over_budget = 0  # candidates left out by the per-layer prefetch budget

    def reset_counters(self) -> None:
        self.prefetches_refused = 0
        self.prefetches_over_budget = 0

    # ---- clock --------------------------------------------------------------------------------------------
    def start_pass(self) -> None:
        for cache in self.caches:
            cache.start_pass()

    def start_layer(self, layer: int, transport: Transport) -> None:
        self.cache_of_layer[layer].start_layer(layer)
        landed = transport.finished()
        if landed:
            self.land(landed)

    def land(self, keys: list[ExpertKey]) -> None:
        for key in keys:
            self.cache_of_layer[key[0]].complete(key)

    # ---- one layer ----------------------------------------------------------------------------------------
    def run_layer(
        self,
        layer: int,
        needed: Sequence[ExpertKey],
        transport: Transport,
        propose: Callable[[], tuple] | None = None,
        compute: Callable[[Sequence[ExpertKey], dict[ExpertKey, int]], None] | None = None,
    ) -> None:
        """Everything one MoE layer does to the cache, in the order both drivers share: land finished copies,
        tell the evictor the routing, then per group pin + request (+ demand copies), prefetch (last group,
        from `propose() -> (candidates, probabilities, next_use)`), `compute(group, slot_of)` (the runtime),
        unpin."""
        cache = self.cache_of_layer[layer]
        cache.start_layer(layer)
        self._layer_body(layer, cache, needed, transport, propose, compute)

    def _layer_body(self, layer, cache, needed, transport, propose, compute) -> None:
        """run_layer after the cache's start_layer: land, tell the routing, the groups."""
        if transport.in_flight:
            landed = transport.finished()
            if landed:
                self.land(landed)
        # the layer's routed experts (ascending ids) are known: the evictor hears them (one group: before its victims,
        # by id where the policy can, ExpertCache.hear_routing); groups of <= num_slots
        size = cache.num_slots
        if self._hears_predictions[layer]:
            cache.hear_routing(needed)
        if len(needed) <= size:  # one group: the common case, without building a list of groups
            if not needed:
                return
            if propose is None and compute is None:  # the simulator without prefetch: the leanest path
                misses = cache.request_group(needed, False)  # nothing runs between the requests and the copies
                if misses is not None:
                    if misses:
                        transport.demand(layer, misses)
                    return
            self._run_group(layer, cache, needed, transport, propose, compute)
            return
        starts = range(0, len(needed), size)
        for start in starts:
            last = start == starts[-1]
            self._run_group(layer, cache, needed[start : start + size], transport, propose if last else None, compute)

    @cython.locals(
        index=cython.Py_ssize_t,
        layer=cython.Py_ssize_t,
        num_layers=cython.Py_ssize_t,
        start=cython.Py_ssize_t,
        end=cython.Py_ssize_t,
        starts=cython.longlong[:],
        hears=list,
        routes=list,
        cache_of_layer=list,
    )
    @cython.boundscheck(False)
    @cython.wraparound(False)
    def run_pass(self, layers: Sequence[Sequence[ExpertKey]], transport: Transport, numbering=None, index: int = 0):
        """Every MoE layer of one pass, in order, for a caller with nothing to do between layers: exactly
        `run_layer(layer, layers[layer], transport)` per layer (same decisions, counters and policy state;
        tests/eval/test_run_pass.py), with no prefetch, no compute and a transport whose copies land at once and
        cost nothing (the simulator without hardware timing and without prefetch): nothing is ever in flight, and
        the demand copies of a layer requested by number are not reported to it. The loop over layers runs here
        (compiled: C), not in the caller.

        With a trace's int numbering of its keys (`numbering`: eval.trace.RequestIds, pass p's layer l being the
        numbers `trace_ids[starts[index + l]:starts[index + l + 1]]` with `index = p * L`), a layer is requested by
        number (`ExpertCache.request_ids`: no ExpertKey hashed); one that must go by key (a policy without an id
        path or not batched, a policy that hears the routing and not by id, more keys than slots) takes run_layer's path
        with `layers[layer]`."""
        num_layers = len(layers)
        cache_of_layer, hears, routes = self.cache_of_layer, self._hears_predictions, self._routes_ids
        if numbering is None:
            for layer in range(num_layers):
                self.run_layer(layer, layers[layer], transport)
            return
        starts = numbering.starts
        for layer in range(num_layers):
            cache = cache_of_layer[layer]
            start = starts[index + layer]
            end = starts[index + layer + 1]
            if hears[layer] and not routes[layer]:
                cache.start_layer(layer)
            elif start == end and not hears[layer]:
                cache.start_layer(layer)
                continue
            elif cache.request_ids(layer, numbering, start, end, routes[layer]) >= 0:
                continue  # it starts the layer even when it declines (-1: by key below, the routing heard there)
            self._layer_body(layer, cache, layers[layer], transport, None, None)

    def _run_group(self, layer, cache, group, transport, propose, compute) -> None:
        """One group: acquire (batched when the cache can), prefetch if `propose`, compute, unpin."""
        misses = cache.request_group(group)  # the batched path; None: pin and request key by key
        if misses is None:
            slot_of = self.acquire(layer, group, transport)
        else:
            slot_of = None
            if misses:
                try:
                    transport.demand(layer, misses)
                except BaseException:
                    cache.unpin_all()  # every pin is this group's (request_group runs only with none before)
                    raise
        try:
            if propose is not None:
                self.prefetch(layer, *propose(), transport=transport, pinned=len(group))
            if compute is not None:
                if slot_of is None:  # the group is pinned: its slots are what they were at acquire
                    slots = cache.slots
                    slot_of = {key: slots[key] for key in group}
                compute(group, slot_of)
        finally:
            if slot_of is None or cache.num_pinned == len(slot_of):
                cache.unpin_all()  # every pin is this group's (both drivers' loops): one call
            else:
                self.release(layer, slot_of)

    # ---- demand -------------------------------------------------------------------------------------------
    def acquire(self, layer: int, keys: Sequence[ExpertKey], transport: Transport) -> dict[ExpertKey, int]:
        """Pin the group's residents first (so a miss never evicts an expert this layer is about to use), then
        request `keys` in ascending order and pin each miss; the misses' copies are issued together at the
        end. The requests keep the routing's order, which is what an oracle evictor (Belady) is told in
        advance. Returns key -> slot."""
        cache = self.cache_of_layer[layer]
        request, pin, slots, in_flight = cache.request, cache.pin, cache.slots, transport.in_flight
        slot_of: dict[ExpertKey, int] = {}
        misses: list[tuple[ExpertKey, int]] = []
        for key in keys:
            if key in slots:
                pin(key)
                slot_of[key] = -1  # known resident, requested below
        try:
            for key in keys:
                if in_flight and key not in slots and cache.num_free == 0:
                    # every slot pinned or receiving a copy: land copies until one resident can go (a landed copy
                    # of an expert this group pinned frees nothing, so one landing is not always enough)
                    while cache.num_in_flight and not cache.has_evictable():
                        landed = transport.land_for_slot(cache)
                        if not landed:
                            break
                        self.land(landed)
                access = request(key)
                slot = slot_of[key] = access[0]
                status = access[1]
                if status is not HIT:
                    if status == MISS:
                        pin(key)
                        misses.append((key, slot))
                    elif status == LATE:
                        transport.late(key)
                        cache.complete(key)
        except BaseException:
            self.release(layer, slot_of)
            raise
        if misses:
            transport.demand(layer, misses)
        return slot_of

    def release(self, layer: int, slot_of: Mapping[ExpertKey, int]) -> None:
        cache = self.cache_of_layer[layer]
        for key in slot_of:
            cache.unpin(key)

    # ---- prefetch -----------------------------------------------------------------------------------------
    def prefetch(
        self,
        layer: int,
        candidates: Sequence[tuple[ExpertKey, float]],
        probabilities: Mapping[ExpertKey, float] | None,
        next_use=None,
        *,
        transport: Transport,
        pinned: int = 0,
    ) -> None:
        """Issue a prefetch policy's candidates (best first) under the budget, the first ones that fit beside the
        `pinned` group (a pass's start: none); forward its probabilities and, if it has one, its next-use table
        ([L, E], see `EvictionPolicy.on_next_use`) to every cache's evictor."""
        if next_use is not None:
            for cache in self.caches:
                cache.next_use(layer, next_use)
        if probabilities is None:
            probabilities = {ExpertKey(*key): float(score) for key, score in candidates}
        if probabilities:
            for cache in self.caches:
                if type(cache.eviction).on_predictions is not EvictionPolicy.on_predictions:
                    cache.predictions(probabilities)
        if not candidates:
            return
        budget = None  # computed at the first candidate to copy: none at all when every candidate is resident
        budget_known = self.prefetch_budget is None
        issued = 0
        room = self.caches[0].num_slots - pinned if self._shared else len(candidates)
        num_layers, cache_of_layer, hears_prefetch = self.num_layers, self.cache_of_layer, self._hears_prefetch
        for key, score in candidates:
            layer_of_key = key[0]
            if layer_of_key >= num_layers:
                continue  # a predictor answering past the last layer: nothing to fetch
            if room <= 0:
                break  # the rest would evict this call's own copies
            room -= 1
            cache = cache_of_layer[layer_of_key]
            if key in cache:
                if hears_prefetch[layer_of_key]:
                    cache.prefetch(key, score)  # resident: the policy hears it, nothing is copied
                continue
            if not budget_known:
                budget_known = True
                budget = self.prefetch_budget * len({k[0] for k, _ in candidates if k[0] < num_layers})
            if budget is not None and issued >= budget:
                self.prefetches_over_budget += 1
                continue
            slot = cache.prefetch(key, score)
            if slot is None:
                self.prefetches_refused += 1
                continue
            issued += 1
            if not transport.prefetch(key, slot):
                cache.complete(key)
