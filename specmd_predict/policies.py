"""The two policy interfaces shared by the simulator (`eval/`) and the real cache (`runtime/`).

The cache keeps the books (residency, pinning, bytes, counters); a policy only orders. Implementations
live one per file in `runtime/policies/` and are registered by name there. The cache's clock is
`(pass, layer)`: a pass is one model forward (prefill, or one decode step) and within it experts are
requested layer by layer, 0 -> L-1.

Hook order the cache guarantees, per pass:
    on_pass_start(p)
    for each layer l:  on_layer_start(l)
        demand request of key:  hit -> on_access(key)
                                late (its prefetch copy still in flight) -> on_late(key), on_access(key)
                                miss -> [victim(), on_evict()]*, on_insert(key, False), on_access(key)
        prefetch of key:        resident -> on_prefetch(key)
                                else -> [victim(), on_evict()]*, on_insert(key, True)
        on_predictions(...) whenever the prefetch policy has scored future experts
        on_next_use(layer, next_LE) whenever a predictor has estimated every expert's next use (optional)

Batched demand (optional, for speed): a policy class that itself declares `batched = True` lets the cache handle
a group of one layer's demand requests (all pinned while the group runs, no prefetch pending) in one call:
    victims(n, excluded) once, then on_group(keys, misses, victims)
instead of the per-request hooks above. By declaring it the class promises that this gives the same victims and
the same state as the per-request order: the hooks of the group's own (pinned) keys never change how it ranks the
other residents. A subclass inherits the per-request path until it declares `batched = True` itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Container, Mapping, Sequence
from typing import ClassVar

import torch

from specmd_predict.routing import ExpertKey, Routing


class EvictionPolicy(ABC):
    name: ClassVar[str]

    def on_pass_start(self, pass_id: int) -> None:
        """A new forward pass begins."""

    def on_layer_start(self, layer: int) -> None:
        """The current pass moves on to MoE layer `layer`."""

    def on_access(self, key: ExpertKey) -> None:
        """A demand request for resident `key` (a hit, or the miss just inserted)."""

    def on_late(self, key: ExpertKey) -> None:
        """A demand request for `key` found its prefetch copy still in flight (on_access follows): the prefetch
        came too late to spare the wait. Policies that measure their prefetcher's timeliness use it."""

    def on_prefetch(self, key: ExpertKey) -> None:
        """A prefetch asked for `key`, which was already resident."""

    def on_insert(self, key: ExpertKey, prefetched: bool) -> None:
        """`key` became resident, by prefetch or by a demand miss."""

    def on_evict(self, key: ExpertKey) -> None:
        """`key` left the cache."""

    def on_predictions(self, probabilities: Mapping[ExpertKey, float]) -> None:
        """Predicted probabilities that experts of later layers are used in this pass."""

    def on_next_use(self, layer: int, next_LE: torch.Tensor) -> None:
        """A learned next-use table made at MoE layer `layer` of this pass: next_LE[j, e] =
        expected layer-steps until (j, e) is demanded, across pass boundaries. [L, E] float32 on the CPU.
        Policies that do not order by next use ignore it."""

    @abstractmethod
    def victim(self, candidates: Collection[ExpertKey]) -> ExpertKey:
        """Choose one of `candidates` (the unpinned residents, never empty) to evict."""

    # batched demand (see the module docstring): used only on classes that declare `batched = True` themselves
    batched: ClassVar[bool] = False

    def victims(self, count: int, excluded: Container[ExpertKey]) -> list[ExpertKey]:
        """`count` distinct residents not in `excluded`, in the order that `count` victim() calls would choose them
        were each evicted before the next call. The cache guarantees that enough residents are evictable."""
        raise NotImplementedError(f"{type(self).__name__} does not choose victims in batches")

    def on_group(self, keys: Sequence[ExpertKey], misses: Sequence[ExpertKey], victims: Sequence[ExpertKey]) -> None:
        """A group of demand requests `keys` (ascending ids) of one layer ran: `victims` left, `misses` (a
        subsequence of `keys`) were inserted, every key of `keys` was accessed. The default replays the per-request
        hooks in that order; batched policies override it with bulk updates."""
        for key in victims:
            self.on_evict(key)
        for key in misses:
            self.on_insert(key, False)
        for key in keys:
            self.on_access(key)


class PrefetchPolicy(ABC):
    name: ClassVar[str]

    @abstractmethod
    def propose(self, layer: int, hidden_TD: torch.Tensor | None, routing: Routing) -> list[tuple[ExpertKey, float]]:
        """Experts of layers after `layer` worth copying now, best first, with a score in [0, 1].

        Called once the router of `layer` has run; `hidden_TD` is that router's input (None when the
        trace kept no hidden state for this layer) and `routing` its decision.

        A policy MAY split this in two so that the runtime reads nothing back from the device but the routing:
        `prepare(layer, hidden_TD) -> Tensor | None` launches the device work without reading anything back,
        and `select(layer, prepared_on_host) -> candidates` finishes on the host (the runtime copies `prepared`
        to pinned memory together with the routing ids: one wait per layer). Candidates whose layer is not
        after `layer` are for the next pass (from the last MoE layer: its layer 0).
        """
