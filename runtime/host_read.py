"""One device-to-host copy per MoE layer: the routing ids and the prefetch prediction packed into one word buffer.

    reader = PackedReader(pin=True)
    hosts = reader.copy([ids_TK, scores_RK, top_ids_RK])   # device: one cat of 32-bit views; ONE non-blocking copy
    ...record an event on the stream, wait for it (runtime/engine.py `_read`)...
    ids_host_TK, scores_host_RK, top_ids_host_RK = hosts  # host views of the same bits, valid after the wait

On a GPU every cudaMemcpyAsync costs the host about as much as a kernel launch, and decoding is host-bound
(README, "Measured on one NVIDIA H200"), so three copies per layer (ids, a predictor's top-k scores, its top-k
ids) cost two launches more than one cat and one copy. Each tensor is reinterpreted as int32 words
(`Tensor.view(torch.int32)`: no kernel, every bit kept, so scores stay exact floats and ids exact ints); 8-byte
tensors (int64 ids) go first so that each sits at an 8-byte aligned word offset, as viewing it back needs. A lone
tensor (on-demand: the ids only) is copied as it is, without a cat.

The host side is planned once per signature (shapes and dtypes): where each tensor sits in the pinned words and
its host view, so a decode step builds no view on the host; the views stay valid until the buffer grows.
"""

from __future__ import annotations

import torch


def packable(tensors: list[torch.Tensor]) -> bool:
    """Whether every tensor can be viewed as 32-bit words (4- or 8-byte elements)."""
    return all(t.element_size() in (4, 8) for t in tensors)


def packing_order(tensors: list[torch.Tensor]) -> list[int]:
    """Indices of `tensors` in packing order: 8-byte ones first (aligned word offsets), ties in their order."""
    return sorted(range(len(tensors)), key=lambda i: -tensors[i].element_size())


def pack_words(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts' bits one after the other as int32 words on their device, in one kernel (the cat): [1, W] when
    every part is one row (the decode path: a view per part, no reshape), else [W]."""
    parts = [t if t.is_contiguous() else t.contiguous() for t in parts]
    if all(t.dim() == 2 and t.shape[0] == 1 for t in parts):
        return torch.cat([t.view(torch.int32) for t in parts], dim=1)
    return torch.cat([t.reshape(-1).view(torch.int32) for t in parts])


def unpack_words(host_W: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Views of the flat words `host_W` (packed in `packing_order`) shaped and typed as `tensors`, in their order."""
    views: list[torch.Tensor | None] = [None] * len(tensors)
    offset = 0
    for i in packing_order(tensors):
        t = tensors[i]
        width = t.numel() * t.element_size() // 4
        views[i] = host_W[offset : offset + width].view(t.dtype).view(t.shape)
        offset += width
    return views


class PackedReader:
    """The engine's device-to-host reads: one copy per call into one reused (pinned) int32 buffer."""

    def __init__(self, pin: bool):
        self.pin = pin
        self._words: torch.Tensor | None = None
        # (shape, dtype) per tensor -> (the copy's host destination, packing order, host views in the call's order)
        self._plans: dict[tuple, tuple[torch.Tensor, list[int], list[torch.Tensor]]] = {}

    def copy(self, tensors: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """Issue the (non-blocking) copy of `tensors` (same device) to the host; their host views, readable once the
        caller has waited for the copy. None if some tensor cannot be packed (elements of 1 or 2 bytes)."""
        key = tuple((t.shape, t.dtype) for t in tensors)
        plan = self._plans.get(key)
        if plan is None:
            if not packable(tensors):
                return None
            plan = self._plan(tensors, key)
        destination, order, views = plan
        if len(tensors) == 1:
            destination.copy_(tensors[0], non_blocking=True)
        else:
            destination.copy_(pack_words([tensors[i] for i in order]), non_blocking=True)
        return views

    def _plan(self, tensors: list[torch.Tensor], key: tuple) -> tuple[torch.Tensor, list[int], list[torch.Tensor]]:
        width = sum(t.numel() * t.element_size() // 4 for t in tensors)
        if self._words is None or self._words.numel() < width:  # grow: every earlier plan's views go with it
            size = max(width, 2 * (0 if self._words is None else self._words.numel()), 64)
            self._words = torch.empty(size, dtype=torch.int32, pin_memory=self.pin)
            self._plans.clear()
        host_W = self._words[:width]
        views = unpack_words(host_W, tensors)
        order = packing_order(tensors)
        if len(tensors) == 1:
            destination = views[0]
        elif all(t.dim() == 2 and t.shape[0] == 1 for t in tensors):
            destination = host_W.view(1, width)  # pack_words' one-row layout: the same words
        else:
            destination = host_W
        plan = self._plans[key] = (destination, order, views)
        return plan
