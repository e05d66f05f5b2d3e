"""The offloading engine: what happens each time a MoE layer calls its experts.

    engine = OffloadEngine(adapter, store, pool, cache, prefetcher)
    runner = engine.runner(layer, inner_forward)   # installed on the layer's experts module (dispatch.py)

Per experts call at MoE layer l (one pass = one model forward; a call at a layer <= the previous one starts a pass):
  1. land finished prefetch copies (polled, never waited for), so a prefetch that has arrived counts as a hit;
  2. launch the prefetch policy's device half on this layer's router input (the experts' `hidden_states`
     argument: the same tensor the router saw, in every family the adapters cover), then read the routing
     ids and that prediction back to the host in one go: on CUDA two non-blocking copies into pinned memory
     and ONE wait on an event, the only blocking device-to-host read of the layer;
  3. demand: request each needed expert in the cache (residents first), pin it; the layer's misses are
     copied together on the copy stream, ahead of any prefetch;
  4. prefetch: the policy's host half turns the prediction into candidates (layers l+1..l+H, and from the
     last layer the next pass's layer 0); at most `prefetch_budget` copies per predicted layer are issued,
     behind the demand copies, before anything waits for those; the scores go to the eviction policy;
  5. compute: the compute stream waits (on the GPU, timed with events) for the copies into this layer's
     slots; the layer's n distinct experts are gathered from their slots into [n, ...] tensors, ids are
     remapped to 0..n-1 and the model's own experts implementation runs over them; unpin.
If a layer needs more distinct experts than there are slots (a long prefill at small capacity), it runs
in chunks of at most `num_slots` experts whose outputs are summed (each chunk zeroes the others' weights).
Inference only: the experts run under `torch.no_grad()`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from runtime.dispatch import InnerForward, SlotView
from runtime.expert_cache import LATE, MISS, CacheStats, ExpertCache
from runtime.stats import OffloadStats
from runtime.store import HostExpertStore, SlotPool
from runtime.transfers import Transfers
from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.policies import PrefetchPolicy
from specmd_predict.routing import ExpertKey, Routing


class OffloadEngine:
    def __init__(
        self,
        adapter: MoEAdapter,
        store: HostExpertStore,
        pool: SlotPool,
        cache: ExpertCache,
        prefetcher: PrefetchPolicy | None,
        eviction_name: str = "",
        prefetch_name: str = "",
        prefetch_budget: int | None = None,
    ):
        self.adapter = adapter
        self.store = store
        self.pool = pool
        self.cache = cache
        self.prefetcher = prefetcher
        self.transfers = Transfers(store, pool)
        self.num_layers = adapter.num_layers
        self.num_experts = adapter.num_experts
        self.eviction_name = eviction_name
        self.prefetch_name = prefetch_name
        self.prefetch_budget = adapter.top_k if prefetch_budget is None else prefetch_budget
        self._split = prefetcher is not None and callable(getattr(prefetcher, "prepare", None))
        self.num_passes = 0
        self.host_reads = 0  # blocking device-to-host reads (CUDA): one per experts call
        self.prefetches_refused = 0  # no slot for a prefetch: every resident pinned or receiving a copy
        self.prefetches_over_budget = 0  # candidates left out by the per-layer prefetch budget
        self._last_layer = self.num_layers  # the first call starts a pass
        self._pinned_ids: torch.Tensor | None = None
        self._pinned_scores: torch.Tensor | None = None
        self._read_done = torch.cuda.Event() if pool.device.type == "cuda" else None

    # ---- installed on each experts module ---------------------------------------------------------------
    def runner(self, layer: int, inner: InnerForward) -> Callable[..., torch.Tensor]:
        def run(module: nn.Module, hidden_TD: torch.Tensor, ids_TK: torch.Tensor, weights_TK: torch.Tensor, *a, **kw):
            return self.forward_layer(layer, inner, module, hidden_TD, ids_TK, weights_TK, *a, **kw)

        return run

    @torch.no_grad()
    def forward_layer(
        self,
        layer: int,
        inner: InnerForward,
        module: nn.Module,
        hidden_TD: torch.Tensor,
        ids_TK: torch.Tensor,
        weights_TK: torch.Tensor,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        cache = self.cache
        if layer <= self._last_layer:
            cache.start_pass()
            self.num_passes += 1
        self._last_layer = layer
        cache.start_layer(layer)
        self._land(self.transfers.finished())

        prepared = self.prefetcher.prepare(layer, hidden_TD) if self._split else None
        ids_host_TK, prepared = self._read(ids_TK, prepared)
        if ids_host_TK.numel() <= 256:  # decode: a set of a few ints beats a torch.unique call
            needed = sorted(set(ids_host_TK.flatten().tolist()))
        else:
            needed = ids_host_TK.unique().tolist()  # ascending
        cache.predictions({ExpertKey(layer, e): 1.0 for e in needed})  # this layer's routing is now known
        ordered = sorted(needed, key=lambda e: ExpertKey(layer, e) not in cache)  # residents first (stable)
        chunks = [ordered[i : i + self.pool.num_slots] for i in range(0, len(ordered), self.pool.num_slots)]
        out_TD = None
        for index, chunk in enumerate(chunks):
            slot_of = self._acquire(layer, chunk)
            try:
                if index == len(chunks) - 1:
                    self._prefetch(layer, prepared, hidden_TD, ids_host_TK, weights_TK)
                slots = list(slot_of.values())
                self.transfers.ready(layer, slots)
                view, local_TK = self._compact(module, slot_of, ids_TK)
                self.transfers.used(slots)  # the gather above is the last read of these slots
                if len(chunks) == 1:
                    part_TD = inner(view, hidden_TD, local_TK, weights_TK, *args, **kwargs)
                else:  # other chunks' experts: expert 0 of this chunk's view, weight zero
                    in_chunk_TK = torch.isin(ids_TK, torch.tensor(chunk, device=ids_TK.device))
                    local_TK = torch.where(in_chunk_TK, local_TK, 0)
                    masked_TK = torch.where(in_chunk_TK, weights_TK, torch.zeros_like(weights_TK))
                    part_TD = inner(view, hidden_TD, local_TK, masked_TK, *args, **kwargs)
                out_TD = part_TD if out_TD is None else out_TD + part_TD
            finally:
                for expert in slot_of:
                    cache.unpin(ExpertKey(layer, expert))
        if out_TD is None:  # no token at all
            view = SlotView(module, {n: t[:0] for n, t in self.pool.tensors.items()}, 0)
            out_TD = inner(view, hidden_TD, ids_TK, weights_TK, *args, **kwargs)
        return out_TD

    # ---- steps --------------------------------------------------------------------------------------------
    def _read(self, ids_TK: torch.Tensor, prepared: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The routing ids (and the prediction, if any) on the host: one blocking wait on CUDA, nothing on CPU."""
        if ids_TK.device.type != "cuda":
            return ids_TK, None if prepared is None else prepared.cpu()
        self._pinned_ids = _pinned_at_least(self._pinned_ids, ids_TK.numel(), torch.long)
        ids_host_TK = self._pinned_ids[: ids_TK.numel()].view(ids_TK.shape)
        ids_host_TK.copy_(ids_TK, non_blocking=True)
        prepared_host = None
        if prepared is not None:
            self._pinned_scores = _pinned_at_least(self._pinned_scores, prepared.numel(), torch.float32)
            prepared_host = self._pinned_scores[: prepared.numel()].view(prepared.shape)
            prepared_host.copy_(prepared, non_blocking=True)
        self._read_done.record(torch.cuda.current_stream(ids_TK.device))
        self._read_done.synchronize()  # the layer's one blocking device-to-host read
        self.host_reads += 1
        return ids_host_TK, prepared_host

    def _acquire(self, layer: int, experts: list[int]) -> dict[int, int]:
        """Make `experts` of `layer` resident and pinned; returns expert -> slot. The misses' copies are issued
        together; the wait for them (and for late prefetches) is the compute stream's, in `transfers.ready`."""
        cache, transfers = self.cache, self.transfers
        slot_of: dict[int, int] = {}
        misses: list[tuple[ExpertKey, int]] = []
        try:
            for expert in experts:
                key = ExpertKey(layer, expert)
                busy = len(slot_of) + len(transfers.in_flight)  # pinned by this chunk, or receiving a copy
                if key not in cache and cache.num_free == 0 and busy >= cache.num_slots:
                    self._land(transfers.land_all())  # every slot is taken: land the copies in the books
                access = cache.request(key)
                cache.pin(key)
                slot_of[expert] = access.slot
                if access.status == MISS:
                    misses.append((key, access.slot))
                elif access.status == LATE:
                    transfers.forget(key)
                    cache.complete(key)
        except BaseException:
            for expert in slot_of:
                cache.unpin(ExpertKey(layer, expert))
            raise
        transfers.demand(layer, misses)
        return slot_of

    def _land(self, keys: list[ExpertKey]) -> None:
        for key in keys:
            self.cache.complete(key)

    def _prefetch(
        self,
        layer: int,
        prepared: torch.Tensor | None,
        hidden_TD: torch.Tensor,
        ids_host_TK: torch.Tensor,
        weights_TK: torch.Tensor,
    ) -> None:
        prefetcher = self.prefetcher
        if prefetcher is None:
            return
        if self._split:
            candidates = prefetcher.select(layer, prepared)
        else:  # a policy without a device half: it gets the host routing and decides itself
            candidates = prefetcher.propose(layer, hidden_TD, Routing(ids_host_TK, weights_TK))
        probabilities = _probabilities(prefetcher, candidates)
        if probabilities:
            self.cache.predictions(probabilities)
        cache = self.cache
        issued, budget = 0, self.prefetch_budget * max(1, len({key[0] for key, _ in candidates}))
        for key, score in candidates:
            if key[0] >= self.num_layers:
                continue  # a predictor answering past the last layer: nothing to fetch
            if key in cache:
                cache.prefetch(key, score)  # resident: the policy hears it, nothing is copied
                continue
            if issued >= budget:
                self.prefetches_over_budget += 1
                continue
            slot = cache.prefetch(key, score)
            if slot is None:
                self.prefetches_refused += 1
                continue
            issued += 1
            if not self.transfers.prefetch(key, slot):
                cache.complete(key)

    def _compact(
        self, module: nn.Module, slot_of: dict[int, int], ids_TK: torch.Tensor
    ) -> tuple[SlotView, torch.Tensor]:
        """The experts of `slot_of` as a view of n stacked experts (ascending ids) and ids_TK remapped to 0..n-1."""
        experts = sorted(slot_of)
        local_of_E = [0] * self.num_experts  # local id per expert, then the slots: one small host tensor
        for local, expert in enumerate(experts):
            local_of_E[expert] = local
        table = torch.tensor(local_of_E + [slot_of[e] for e in experts], dtype=torch.long)
        table = table.to(self.pool.device, non_blocking=True)  # one small copy, staged at once (no sync)
        local_TK = table[: self.num_experts][ids_TK]
        stacked = self.pool.gather(table[self.num_experts :])
        return SlotView(module, stacked, len(experts)), local_TK

    # ---- results ------------------------------------------------------------------------------------------
    @property
    def layer_stall_s(self) -> list[float]:
        return self.transfers.stall_s(self.num_layers)

    def reset_stats(self) -> None:
        fresh = CacheStats()
        fresh.grow(self.num_layers)
        self.cache.stats = fresh  # the cache rebinds its hot path to the new counters
        self.transfers.reset_stall()
        self.num_passes = 0
        self.host_reads = 0
        self.prefetches_refused = 0
        self.prefetches_over_budget = 0

    def stats(self) -> OffloadStats:
        return OffloadStats.collect(self)


def _pinned_at_least(buffer: torch.Tensor | None, numel: int, dtype: torch.dtype) -> torch.Tensor:
    if buffer is not None and buffer.numel() >= numel:
        return buffer
    return torch.empty(max(numel, 2 * (0 if buffer is None else buffer.numel()), 64), dtype=dtype, pin_memory=True)


def _probabilities(prefetcher: PrefetchPolicy, candidates: list[tuple[ExpertKey, float]]) -> dict[ExpertKey, float]:
    """What the eviction policy hears: the prefetcher's predicted probabilities for this pass's later layers if
    it keeps them (never the next pass's), else its picks."""
    kept = getattr(prefetcher, "probabilities", None)
    return kept if kept is not None else {ExpertKey(*key): float(score) for key, score in candidates}
