"""The offloading engine: what happens each time a MoE layer calls its experts.

    engine = OffloadEngine(adapter, store, pool, cache, prefetcher)
    runner = engine.runner(layer, inner_forward)   # installed on the layer's experts module (dispatch.py)

Per experts call at MoE layer l (one pass = one model forward; a call at a layer <= the previous one starts a pass):
  1. land finished prefetch copies, so a prefetch that has arrived counts as a hit, not as late;
  2. demand: request each needed expert in the cache (residents first), pin it, copy misses at once and wait
     for late prefetches (the wait is the layer's stall time);
  3. prefetch: the prefetch policy scores experts of layers l+1..l+H from this layer's router input (the
     experts' `hidden_states` argument: the same tensor the router saw, in every family the adapters cover)
     and routing; the scores go to the eviction policy, the copies to the side stream (they overlap compute);
  4. compute: expert ids -> slot ids, the model's own experts implementation over the slot pool; unpin.
If a layer needs more distinct experts than there are slots (a long prefill at small capacity), it runs
in chunks of at most `num_slots` experts whose outputs are summed (each chunk zeroes the others' weights).
Inference only: the experts run under `torch.no_grad()`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from runtime.dispatch import InnerForward, SlotView
from runtime.expert_cache import LATE, MISS, ExpertCache
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
        self.num_passes = 0
        self.layer_stall_s = [0.0] * self.num_layers
        self.prefetches_refused = 0  # no slot for a prefetch: every resident pinned or receiving a copy
        self._last_layer = self.num_layers  # the first call starts a pass

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
        self._land_finished()

        needed = torch.unique(ids_TK).tolist()  # the one CPU<->GPU sync of the layer: the cache decides on the CPU
        cache.predictions({ExpertKey(layer, e): 1.0 for e in needed})  # this layer's routing is now known
        needed.sort(key=lambda e: ExpertKey(layer, e) not in cache)  # residents first (stable: ascending ids)
        chunks = [needed[i : i + self.pool.num_slots] for i in range(0, len(needed), self.pool.num_slots)]
        out_TD = None
        for index, chunk in enumerate(chunks):
            slot_of = self._acquire(layer, chunk)
            try:
                if index == len(chunks) - 1:
                    self._prefetch(layer, hidden_TD, ids_TK, weights_TK)
                view, local_TK = self._compact(module, slot_of, ids_TK)
                if len(chunks) == 1:
                    part_TD = inner(view, hidden_TD, local_TK, weights_TK, *args, **kwargs)
                else:  # other chunks' experts: expert 0 of this chunk's view, weight zero
                    in_chunk_TK = torch.isin(ids_TK, torch.tensor(chunk, device=ids_TK.device))
                    local_TK = torch.where(in_chunk_TK, local_TK, 0)
                    masked_TK = torch.where(in_chunk_TK, weights_TK, torch.zeros_like(weights_TK))
                    part_TD = inner(view, hidden_TD, local_TK, masked_TK, *args, **kwargs)
                out_TD = part_TD if out_TD is None else out_TD + part_TD
                self.transfers.used(list(slot_of.values()))
            finally:
                for expert in slot_of:
                    cache.unpin(ExpertKey(layer, expert))
        if out_TD is None:  # no token at all
            view = SlotView(module, {n: t[:0] for n, t in self.pool.tensors.items()}, 0)
            out_TD = inner(view, hidden_TD, ids_TK, weights_TK, *args, **kwargs)
        return out_TD

    def _compact(
        self, module: nn.Module, slot_of: dict[int, int], ids_TK: torch.Tensor
    ) -> tuple[SlotView, torch.Tensor]:
        """The experts of `slot_of` as a view of n stacked experts (ascending ids) and ids_TK remapped to 0..n-1."""
        experts = sorted(slot_of)
        local_of_E = torch.zeros(self.num_experts, dtype=torch.long)
        local_of_E[experts] = torch.arange(len(experts))
        slots_N = torch.tensor([slot_of[e] for e in experts], dtype=torch.long)
        device = ids_TK.device
        local_TK = local_of_E.to(device, non_blocking=True)[ids_TK]
        slots_N = slots_N.to(self.pool.device, non_blocking=True)
        stacked = {name: t.index_select(0, slots_N) for name, t in self.pool.tensors.items()}
        return SlotView(module, stacked, len(experts)), local_TK

    # ---- steps --------------------------------------------------------------------------------------------
    def _land_finished(self) -> None:
        for key in self.transfers.finished():
            self.cache.complete(key)

    def _acquire(self, layer: int, experts: list[int]) -> dict[int, int]:
        """Make `experts` of `layer` resident and pinned; returns expert -> slot. Stall time is counted here."""
        cache = self.cache
        slot_of: dict[int, int] = {}
        misses: list[tuple[ExpertKey, int]] = []
        late: list[ExpertKey] = []
        try:
            for expert in experts:
                key = ExpertKey(layer, expert)
                busy = len(slot_of) + len(self.transfers.in_flight)  # pinned by this chunk, or receiving a copy
                if key not in cache and cache.num_free == 0 and busy >= cache.num_slots:
                    self._land(self.transfers.wait_all())  # every slot is pinned or receiving a copy: land the copies
                access = cache.request(key)
                cache.pin(key)
                slot_of[expert] = access.slot
                if access.status == MISS:
                    misses.append((key, access.slot))
                elif access.status == LATE:
                    late.append(key)
        except BaseException:
            for expert in slot_of:
                cache.unpin(ExpertKey(layer, expert))
            raise
        stall_s = self.transfers.fetch_now(misses) + self.transfers.wait(late)
        self._land(late)
        self.layer_stall_s[layer] += stall_s
        return slot_of

    def _land(self, keys: list[ExpertKey]) -> None:
        for key in keys:
            self.cache.complete(key)

    def _prefetch(self, layer: int, hidden_TD: torch.Tensor, ids_TK: torch.Tensor, weights_TK: torch.Tensor) -> None:
        if self.prefetcher is None or layer >= self.num_layers - 1:
            return
        candidates = self.prefetcher.propose(layer, hidden_TD, Routing(ids_TK, weights_TK))
        probabilities = _probabilities(self.prefetcher, candidates)
        if probabilities:
            self.cache.predictions(probabilities)
        for key, score in candidates:
            slot = self.cache.prefetch(key, score)
            if slot is None:
                if key not in self.cache:
                    self.prefetches_refused += 1
                continue
            if not self.transfers.prefetch(key, slot):
                self.cache.complete(key)

    # ---- results ------------------------------------------------------------------------------------------
    def stats(self) -> OffloadStats:
        return OffloadStats.collect(self)


def _probabilities(prefetcher: PrefetchPolicy, candidates: list[tuple[ExpertKey, float]]) -> dict[ExpertKey, float]:
    """What the eviction policy hears: the prefetcher's predicted probabilities if it keeps them, else its picks."""
    kept = getattr(prefetcher, "probabilities", None)
    return dict(kept) if kept else {ExpertKey(*key): float(score) for key, score in candidates}
