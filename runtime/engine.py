"""The offloading engine: what happens each time a MoE layer calls its experts.

    engine = OffloadEngine(adapter, store, pool, cache, prefetcher)
    runner = engine.runner(layer, inner_forward)   # installed on the layer's experts module (dispatch.py)

Per experts call at MoE layer l (one pass = one model forward; a call at a layer <= the previous one starts a
pass). Every cache decision goes through the cache driver (runtime/driver.py), which the simulator runs too;
the copies go through `Transfers` (runtime/transfers.py), the driver's transport on the real device:
  1. land finished prefetch copies (polled, never waited for), so a prefetch that has arrived counts as a hit;
  2. launch the prefetch policy's device half on this layer's router input (the experts' `hidden_states`
     argument: the same tensor the router saw, in every family the adapters cover), then read the routing
     ids and that prediction back to the host in one go: on CUDA the ids and the prediction's one or two
     tensors packed into one buffer of 32-bit words (one cat), ONE non-blocking copy into pinned memory and
     ONE wait on an event (runtime/host_read.py), the only blocking device-to-host read of the layer;
  3. demand: the driver pins the layer's resident experts, requests each needed one, pins the misses; they are
     copied together on the copy stream, ahead of any prefetch;
  4. prefetch: the policy's host half turns the prediction into candidates (layers l+1..l+H, and from the
     last layer the next pass's layer 0, or, with a token-table bank, at the next pass's start from its input
     token: runtime/pass_start.py); the driver takes the first ones that fit in the cache beside this layer's
     pinned group and issues at most `prefetch_budget` copies per predicted layer, behind the demand copies,
     before anything waits for those; the scores go to the eviction policy;
  5. compute: the compute stream waits (on the GPU, timed with events) for the copies into this layer's
     slots; the experts are gathered from their slots into [n, ...] tensors (one `index_select` of whole byte
     rows), ids are remapped to 0..n-1 and the model's own experts implementation runs over them; unpin. A
     one-token layer (decode) reads its k slots from a slot table kept on the device (entries rewritten only
     when an expert moved) and gets local ids 0..k-1 in routing order, so nothing is built on the host; a
     layer of several tokens gets its n distinct experts in ascending id order through a 2n-entry table.
If a layer needs more distinct experts than there are slots (a long prefill at small capacity), the driver
brings them in groups of at most `num_slots`; each group's rows are copied (on the device) into a staging
buffer of the layer's n experts as soon as its slots are ready, before the next group's copies may overwrite
them, and the model's experts implementation runs ONCE over all n: the same arithmetic as the unmodified
model (summing per-group outputs would round differently in bf16 and change greedy tokens). The staging
buffer holds at most E expert rows (one layer's), allocated on first need and kept.
Inference only: the experts run under `torch.no_grad()`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from runtime.dispatch import InnerForward, SlotView, count_attrs_of, plain_attrs
from runtime.driver import CacheDriver
from runtime.expert_cache import CacheStats, ExpertCache
from runtime.host_read import PackedReader
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
        budget = adapter.top_k if prefetch_budget is None else prefetch_budget
        self.driver = CacheDriver([cache] * self.num_layers, prefetch_budget=budget)
        self._split = prefetcher is not None and callable(getattr(prefetcher, "prepare", None))
        self._keys = [[ExpertKey(layer, e) for e in range(self.num_experts)] for layer in range(self.num_layers)]
        self.num_passes = 0
        self.host_reads = 0  # blocking device-to-host reads (CUDA): one per experts call
        self.pass_start_reads = 0  # plus at most one per pass at its start (runtime/pass_start.py; CUDA)
        self._last_layer = self.num_layers  # the first call starts a pass
        self._reader = PackedReader(pin=pool.device.type == "cuda")  # the one copy per layer (runtime/host_read.py)
        self._read_done = torch.cuda.Event() if pool.device.type == "cuda" else None
        # the slot of every (layer, expert) whose slot compute has read, on the device (stale entries are never
        # read: each layer's entries are brought up to date before it computes), and its host mirror
        with torch.inference_mode(False):  # a normal tensor: written in place inside or outside inference mode
            self._slot_LE = torch.full((self.num_layers, self.num_experts), -1, dtype=torch.long, device=pool.device)
            self._slot_rows = list(self._slot_LE.unbind(0))  # per-layer views: no indexing op per layer call
        self._slot_mirror = [[-1] * self.num_experts for _ in range(self.num_layers)]
        self._local_ids: dict[int, torch.Tensor] = {}  # k -> [1, k] device tensor 0..k-1
        # id(experts module) -> its expert-count attribute names and its fixed attributes (dispatch.SlotView)
        self._fixed_attrs: dict[int, tuple[tuple[str, ...], dict]] = {}
        # id(experts module) -> (the pool's stacked views it was built on, the SlotView): see `_view`
        self._views: dict[int, tuple[dict[str, torch.Tensor], SlotView]] = {}

    # ---- installed on each experts module ---------------------------------------------------------------
    def runner(self, layer: int, inner: InnerForward) -> Callable[..., torch.Tensor]:
        def run(module: nn.Module, hidden_TD: torch.Tensor, ids_TK: torch.Tensor, weights_TK: torch.Tensor, *a, **kw):
            return self.forward_layer(layer, inner, module, hidden_TD, ids_TK, weights_TK, *a, **kw)

        return run

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
        if torch.is_grad_enabled():  # inference only; under no_grad/inference_mode already (generate), skip the switch
            with torch.no_grad():
                return self.forward_layer(layer, inner, module, hidden_TD, ids_TK, weights_TK, *args, **kwargs)
        driver = self.driver
        if layer <= self._last_layer:
            self.start_pass()
        self._last_layer = layer

        prepared = self.prefetcher.prepare(layer, hidden_TD, ids_TK) if self._split else None  # ids stay on device
        if self._read_done is None:  # CPU: the ids are host memory already, nothing to wait for
            ids_host_TK = ids_TK
            if isinstance(prepared, tuple):  # a predictor's own top-k: (scores [R, k], ids [R, k])
                if prepared[0].device.type != "cpu":
                    prepared = (prepared[0].cpu(), prepared[1].cpu())
            elif prepared is not None and prepared.device.type != "cpu":
                prepared = prepared.cpu()
        else:
            ids_host_TK, prepared = self._read(ids_TK, prepared)
        if ids_host_TK.shape[0] == 1:  # decode: a set of a few ints beats a torch.unique call (and no flatten op)
            needed = sorted(set(ids_host_TK.tolist()[0]))
        elif ids_host_TK.numel() <= 256:
            needed = sorted(set(ids_host_TK.flatten().tolist()))
        else:
            needed = ids_host_TK.unique().tolist()  # ascending
        keys = self._keys[layer]
        parts: list[torch.Tensor] = []
        propose = None
        if self.prefetcher is not None:

            def propose():
                if self._split:
                    candidates = self.prefetcher.select(layer, prepared)
                else:  # a policy without a device half: it gets the host routing and decides itself
                    candidates = self.prefetcher.propose(layer, hidden_TD, Routing(ids_host_TK, weights_TK))
                return (
                    candidates,  # the driver takes the first ones that fit beside the pinned group
                    getattr(self.prefetcher, "probabilities", None),
                    getattr(self.prefetcher, "next_use", None),
                )

        staged = [0]  # experts of this layer staged so far (several groups only)

        def compute(group: list[ExpertKey], slot_of: dict[ExpertKey, int]) -> None:
            slots = [slot_of[key] for key in group]  # group's order (ascending ids), not the dict's
            self.transfers.ready(layer, slots)
            if len(group) < len(needed):  # one of several groups: staged, computed once all are (below)
                self._stage(slots, staged[0], len(needed))
                self.transfers.used(slots)  # the staging copy is the last read of these slots
                staged[0] += len(group)
                if staged[0] == len(needed):
                    view, local_TK = self._staged_view(module, needed, ids_TK)
                    parts.append(inner(view, hidden_TD, local_TK, weights_TK, *args, **kwargs))
                return
            if ids_TK.shape[0] == 1:  # decode: one token, read through the slot table
                self._update_slot_table(layer, needed, slots)  # one group: `needed` are its experts, in order
                view, local_TK = self._token_view(module, layer, ids_TK)
            else:
                view, local_TK = self._compact(module, group, slots, ids_TK)
            self.transfers.used(slots)  # the gather above is the last read of these slots
            parts.append(inner(view, hidden_TD, local_TK, weights_TK, *args, **kwargs))

        driver.run_layer(layer, [keys[e] for e in needed], self.transfers, propose, compute)
        if not parts:  # no token at all
            view = SlotView(module, {n: t[:0] for n, t in self.pool.tensors.items()}, 0)
            return inner(view, hidden_TD, ids_TK, weights_TK, *args, **kwargs)
        return parts[0]

    def start_pass(self) -> None:
        """A new pass (model forward) begins: at its first MoE layer, or earlier where the pass-start hook sees
        its input tokens (runtime/pass_start.py), after which its layer 0 does not start another."""
        self.driver.start_pass()
        self.num_passes += 1
        self._last_layer = -1

    # ---- steps --------------------------------------------------------------------------------------------
    def _read(self, ids_TK: torch.Tensor, prepared):
        """The routing ids and the prediction (if any: one tensor, or a predictor's own top-k as (scores, ids)) on
        the host, on CUDA: the layer's one blocking device-to-host read. All of them are packed into one word
        buffer on the device (one cat of 32-bit views; the ids alone need none) and copied non-blocking into pinned
        memory in ONE copy (runtime/host_read.py), then ONE wait on an event; the results are views of the pinned
        words, planned once per shape."""
        if prepared is None:
            tensors = [ids_TK]
        else:
            tensors = [ids_TK, *prepared] if isinstance(prepared, tuple) else [ids_TK, prepared]
        hosts = self._reader.copy(tensors)
        if hosts is None:  # (no such prediction today) a tensor of 1- or 2-byte elements: a copy each, one wait
            hosts = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
            for host, t in zip(hosts, tensors, strict=True):
                host.copy_(t, non_blocking=True)
        self._read_done.record(torch.cuda.current_stream(ids_TK.device))
        self._read_done.synchronize()  # the layer's one blocking device-to-host read
        self.host_reads += 1
        if prepared is None:
            return hosts[0], None
        return hosts[0], tuple(hosts[1:]) if isinstance(prepared, tuple) else hosts[1]

    def _update_slot_table(self, layer: int, experts: list[int], slots: list[int]) -> None:
        """Bring the device slot table's entries of `experts` up to date (the host mirror says which changed: none
        on a hit that stayed put, so a decode step with every expert resident writes nothing)."""
        mirror = self._slot_mirror[layer]
        for expert, slot in zip(experts, slots, strict=True):
            if mirror[expert] != slot:
                mirror[expert] = slot
                self._slot_rows[layer][expert].fill_(slot)  # a kernel on the compute stream, no sync

    def _token_view(self, module: nn.Module, layer: int, ids_TK: torch.Tensor) -> tuple[SlotView, torch.Tensor]:
        """One token's k experts (in its routing order) as a view of k stacked experts, and local ids 0..k-1:
        the slots come from the device slot table, so nothing is built on the host."""
        k = ids_TK.shape[1]
        slots_K = self._slot_rows[layer].index_select(0, ids_TK[0])
        local_TK = self._local_ids.get(k)
        if local_TK is None:
            local_TK = self._local_ids[k] = torch.arange(k, device=self.pool.device).unsqueeze(0)
        return self._view(module, self.pool.gather(slots_K), k), local_TK

    def _view(self, module: nn.Module, stacked: dict[str, torch.Tensor], n: int) -> SlotView:
        """`module` seen through the n experts `stacked` (a SlotView). The pool hands out the same dict of views
        for the same n (`SlotPool.gather`), so a decode step reuses the view its layer built last time (kept per
        module, with the dict it was built on) instead of building one per layer call."""
        cached = self._views.get(id(module))
        if cached is not None and cached[0] is stacked:
            return cached[1]
        fixed = self._fixed_attrs.get(id(module))
        if fixed is None:
            fixed = self._fixed_attrs[id(module)] = (count_attrs_of(module), plain_attrs(module))
        view = SlotView(module, stacked, n, *fixed)
        self._views[id(module)] = (stacked, view)
        return view

    def _device_longs(self, values: list[int]) -> torch.Tensor:
        """A small int64 host list on the pool's device: on CUDA one non-blocking copy, staged at once (no sync)."""
        out = torch.tensor(values, dtype=torch.long)
        return out if self._read_done is None else out.to(self.pool.device, non_blocking=True)

    def _stage(self, slots: list[int], offset: int, total: int) -> None:
        """Copy the experts in `slots` to staging rows offset.. of a layer with `total` experts (several groups)."""
        self.pool.stage(self._device_longs(slots), offset, total)

    def _staged_view(self, module: nn.Module, needed: list[int], ids_TK: torch.Tensor) -> tuple[SlotView, torch.Tensor]:
        """The staged experts (`needed`, ascending ids, every expert the layer's tokens chose) as a view of n
        stacked experts, and ids_TK remapped to 0..n-1."""
        local_TK = torch.searchsorted(
            self._device_longs(needed), ids_TK if ids_TK.dtype == torch.long else ids_TK.long()
        )
        return self._view(module, self.pool.staged(len(needed)), len(needed)), local_TK

    def _compact(
        self, module: nn.Module, keys: list[ExpertKey], slots: list[int], ids_TK: torch.Tensor
    ) -> tuple[SlotView, torch.Tensor]:
        """The experts `keys` (ascending ids, every expert of ids_TK) held in `slots` as a view of n stacked
        experts, and ids_TK remapped to 0..n-1."""
        n = len(keys)
        # the n expert ids, then their n slots: one small tensor of 2n (not one of E: cheaper to build), one copy
        table = self._device_longs([key.expert for key in keys] + slots)
        if ids_TK.dtype != torch.long:
            ids_TK = ids_TK.long()  # searchsorted wants the table's dtype
        local_TK = torch.searchsorted(table[:n], ids_TK)  # position among the ascending ids = the local id
        return self._view(module, self.pool.gather(table[n:]), n), local_TK

    # ---- results ------------------------------------------------------------------------------------------
    @property
    def prefetches_refused(self) -> int:
        return self.driver.prefetches_refused

    @property
    def prefetches_over_budget(self) -> int:
        return self.driver.prefetches_over_budget

    @property
    def layer_stall_s(self) -> list[float]:
        return self.transfers.stall_s(self.num_layers)

    def reset_stats(self) -> None:
        fresh = CacheStats()
        fresh.grow(self.num_layers)
        self.cache.stats = fresh  # the cache rebinds its hot path to the new counters
        self.transfers.reset_stall()
        self.driver.reset_counters()
        self.num_passes = 0
        self.host_reads = 0
        self.pass_start_reads = 0

    def stats(self) -> OffloadStats:
        return OffloadStats.collect(self)
