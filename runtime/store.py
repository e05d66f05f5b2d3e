"""Where expert weights live: the host store (every routed expert) and the device slot pool (the cached few).

    store = HostExpertStore.take(adapter, pin=True)      # moves each layer's stacked expert tensors to host memory
    pool = SlotPool(store, num_slots=52, device="cuda")  # one [num_slots, row_bytes] device buffer
    pool.load(slot, store.row(layer, expert))           # slot <- one expert: ONE contiguous copy (caller's stream)

One expert is one contiguous byte row: per MoE layer the host store keeps a [E, row_bytes] uint8 buffer
(pinned on CUDA) holding every stacked tensor's slice of each expert side by side (each at a 256-byte aligned
offset), and the experts modules' own stacked parameters ([E, ...], named by `adapter.expert_tensor_names()`)
become views into it, so `state_dict()` still shows the whole model and a copy to the device is one
`copy_` per expert instead of one per tensor. The pool is the same layout with `num_slots` rows on the
device; `pool.tensors[name]` are its [num_slots, ...] views (see dispatch.py for how compute reads them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from specmd_predict.adapters.base import MoEAdapter

_ALIGN = 256  # bytes: every tensor's slice starts aligned as an allocator would align it


@dataclass(frozen=True)
class RowLayout:
    """Where each stacked tensor's per-expert slice sits in an expert's byte row."""

    names: list[str]
    shapes: list[tuple[int, ...]]  # per-expert shape (the stacked shape without its leading E)
    dtypes: list[torch.dtype]
    offsets: list[int]  # bytes
    row_bytes: int

    @classmethod
    def of(cls, experts: nn.Module, names: list[str]) -> RowLayout:
        shapes, dtypes, offsets, offset = [], [], [], 0
        for name in names:
            t = _tensor(experts, name)
            shapes.append(tuple(t.shape[1:]))
            dtypes.append(t.dtype)
            offsets.append(offset)
            offset += _aligned(t[0].numel() * t.element_size())
        return cls(list(names), shapes, dtypes, offsets, offset)

    def views(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """[N, row_bytes] uint8 -> {name: [N, *shape] view of its dtype}."""
        out = {}
        for name, shape, dtype, offset in zip(self.names, self.shapes, self.dtypes, self.offsets, strict=True):
            nbytes = _numel(shape) * dtype.itemsize
            out[name] = rows[:, offset : offset + nbytes].view(dtype).view(rows.shape[0], *shape)
        return out


@dataclass
class HostExpertStore:
    """Each MoE layer's experts in host memory: `rows[layer]` is [E, row_bytes] uint8, `tensors[layer][name]`
    the stacked [E, ...] views into it (the modules' own parameters)."""

    tensor_names: list[str]
    layout: RowLayout
    rows: list[torch.Tensor]
    tensors: list[dict[str, torch.Tensor]]
    pinned: bool

    @classmethod
    def check_layout(cls, adapter: MoEAdapter) -> list[str]:
        """The stacked tensor names, checking every layer stacks the same shapes and dtypes (one pool fits all)."""
        names = adapter.expert_tensor_names(0)
        if not names:
            raise ValueError(f"{adapter.model_type}: the experts module has no tensors stacked over its experts")
        reference = {name: _tensor(adapter.experts(0), name) for name in names}
        for layer in range(1, adapter.num_layers):
            experts = adapter.experts(layer)
            if adapter.expert_tensor_names(layer) != names:
                raise ValueError(f"MoE layer {layer} stacks other expert tensors than layer 0: cannot share one pool")
            for name, ref in reference.items():
                t = _tensor(experts, name)
                if t.shape != ref.shape or t.dtype != ref.dtype:
                    raise ValueError(
                        f"MoE layer {layer}'s {name} is {tuple(t.shape)} {t.dtype}, layer 0's is "
                        f"{tuple(ref.shape)} {ref.dtype}: cannot share one slot pool"
                    )
        return names

    @classmethod
    def take(cls, adapter: MoEAdapter, pin: bool) -> HostExpertStore:
        """Move every layer's stacked expert tensors into per-expert host rows (pinned if `pin`), in place in the
        modules: their parameters become views of the rows (one layer at a time, so the peak is one layer more)."""
        names = cls.check_layout(adapter)
        layout = RowLayout.of(adapter.experts(0), names)
        rows, tensors = [], []
        for layer in range(adapter.num_layers):
            experts = adapter.experts(layer)
            num_experts = _tensor(experts, names[0]).shape[0]
            layer_rows = torch.zeros((num_experts, layout.row_bytes), dtype=torch.uint8, pin_memory=pin)
            views = layout.views(layer_rows)
            for name, view in views.items():
                view.copy_(_tensor(experts, name).detach())
                _replace(experts, name, view)
            rows.append(layer_rows)
            tensors.append(views)
        return cls(names, layout, rows, tensors, pin)

    def expert(self, layer: int, expert: int) -> dict[str, torch.Tensor]:
        """One expert's slices (views into the host rows)."""
        return {name: t[expert] for name, t in self.tensors[layer].items()}

    def row(self, layer: int, expert: int) -> torch.Tensor:
        """One expert as one contiguous [row_bytes] uint8 tensor (a view)."""
        return self.rows[layer][expert]


class SlotPool:
    """The device cache's storage: one [num_slots, row_bytes] uint8 buffer on `device`, and its per-name views."""

    def __init__(self, store: HostExpertStore, num_slots: int, device: torch.device):
        self.num_slots = num_slots
        self.device = torch.device(device)
        self.layout = store.layout
        with torch.inference_mode(False):  # normal tensors: copied into in place, inside or outside inference mode
            self.rows = torch.zeros((num_slots, self.layout.row_bytes), dtype=torch.uint8, device=self.device)
        self.tensors: dict[str, torch.Tensor] = self.layout.views(self.rows)
        self._gathered_rows: torch.Tensor | None = None  # [size, row_bytes] uint8, kept from call to call
        # n -> (its first n rows, their per-name views), kept: building views costs more than the copy on CPU
        self._gathered_n: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}
        self._staged_rows: torch.Tensor | None = None  # [<= E, row_bytes]: a layer with more experts than slots

    def load(self, slot: int, row: torch.Tensor, non_blocking: bool = False) -> None:
        """Copy one expert's row (`store.row(layer, expert)`) into `slot`, on the current stream: one copy."""
        self.rows[slot].copy_(row, non_blocking=non_blocking)

    def gather(self, slots_N: torch.Tensor) -> dict[str, torch.Tensor]:
        """The experts in `slots_N` as stacked tensors [N, ...] per name (what an experts kernel reads).

        One `index_select` of whole byte rows (one kernel for every tensor of the experts, not one per name)
        into a buffer kept from call to call (a fresh allocation per call costs more than the copy on CPU),
        then the cached per-name views of its first N rows (laid out as the pool's: dim 0 strides a row). The
        next call overwrites the buffer, after this call's compute in stream order."""
        n = slots_N.shape[0]
        if self._gathered_rows is None or self._gathered_rows.shape[0] < n:
            size = max(n, 2 * (0 if self._gathered_rows is None else self._gathered_rows.shape[0]))
            with torch.inference_mode(False):
                self._gathered_rows = torch.empty((size, self.layout.row_bytes), dtype=torch.uint8, device=self.device)
            self._gathered_n.clear()
        cached = self._gathered_n.get(n)
        if cached is None:
            rows_N = self._gathered_rows[:n]
            cached = self._gathered_n[n] = (rows_N, self.layout.views(rows_N))
        torch.index_select(self.rows, 0, slots_N, out=cached[0])
        return cached[1]  # the same dict each call for this n: callers must not change it

    def stage(self, slots_N: torch.Tensor, offset: int, total: int) -> None:
        """Copy the experts in `slots_N` into staging rows [offset, offset + N) of a buffer of >= `total` rows: a
        layer that needs more experts than there are slots collects them here, group by group (engine.py)."""
        if self._staged_rows is None or self._staged_rows.shape[0] < total:  # at a layer's first group (offset 0)
            with torch.inference_mode(False):
                self._staged_rows = torch.empty((total, self.layout.row_bytes), dtype=torch.uint8, device=self.device)
        torch.index_select(self.rows, 0, slots_N, out=self._staged_rows[offset : offset + slots_N.shape[0]])

    def staged(self, n: int) -> dict[str, torch.Tensor]:
        """The first `n` staged experts as stacked tensors [n, ...] per name (views of the staging buffer)."""
        return self.layout.views(self._staged_rows[:n])

    @property
    def nbytes(self) -> int:
        return self.rows.numel()


def _aligned(num_bytes: int) -> int:
    return -(-num_bytes // _ALIGN) * _ALIGN


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for size in shape:
        out *= size
    return out


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    return getattr(module, name)


def _replace(module: nn.Module, name: str, host: torch.Tensor) -> None:
    """Swap a parameter (or buffer) for its host copy, keeping its kind and requires_grad."""
    if name in module._parameters:
        old = module._parameters[name]
        module._parameters[name] = nn.Parameter(host, requires_grad=old.requires_grad)
    else:
        module._buffers[name] = host
