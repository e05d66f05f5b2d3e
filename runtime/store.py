"""Where expert weights live: the host store (every routed expert) and the device slot pool (the cached few).

    store = HostExpertStore.take(adapter, pin=True)      # moves each layer's stacked expert tensors to host memory
    pool = SlotPool(store, num_slots=52, device="cuda")  # per tensor name one [num_slots, ...] device tensor
    pool.load(slot, store.expert(layer, expert))        # slot <- one expert's slices (the caller picks the stream)

The host store keeps the stacked tensors ([E, ...], named by `adapter.expert_tensor_names()`) as the experts
modules' own parameters, now in (pinned) host memory, so `state_dict()` still shows the whole model. The pool
has one tensor per name with leading dim `num_slots` instead of E: a view that swaps the module's stacked
tensors for the pool's runs the family's own experts forward over the cached experts (see dispatch.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from specmd_predict.adapters.base import MoEAdapter


@dataclass
class HostExpertStore:
    """Each MoE layer's stacked expert tensors in host memory: `tensors[layer][name]` is [E, ...]."""

    tensor_names: list[str]
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
        """Move every layer's stacked expert tensors to host memory (pinned if `pin`), in place in the modules."""
        names = cls.check_layout(adapter)
        tensors = []
        for layer in range(adapter.num_layers):
            experts = adapter.experts(layer)
            per_name = {}
            for name in names:
                current = _tensor(experts, name)
                host = current.detach().to("cpu").contiguous()
                if pin and not host.is_pinned():
                    host = host.pin_memory()
                if host.data_ptr() != current.data_ptr():
                    _replace(experts, name, host)
                per_name[name] = host
            tensors.append(per_name)
        return cls(names, tensors, pin)

    def expert(self, layer: int, expert: int) -> dict[str, torch.Tensor]:
        """One expert's slices (views into the host tensors)."""
        return {name: t[expert] for name, t in self.tensors[layer].items()}


class SlotPool:
    """The device cache's storage: for each stacked tensor name, one [num_slots, ...] tensor on `device`."""

    def __init__(self, store: HostExpertStore, num_slots: int, device: torch.device):
        self.num_slots = num_slots
        self.device = torch.device(device)
        with torch.inference_mode(False):  # normal tensors: copied into in place, inside or outside inference mode
            self.tensors: dict[str, torch.Tensor] = {
                name: torch.zeros((num_slots, *t.shape[1:]), dtype=t.dtype, device=self.device)
                for name, t in store.tensors[0].items()
            }

    def load(self, slot: int, expert_slices: dict[str, torch.Tensor], non_blocking: bool = False) -> None:
        """Copy one expert's slices into `slot`, on the current stream."""
        for name, src in expert_slices.items():
            self.tensors[name][slot].copy_(src, non_blocking=non_blocking)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    return getattr(module, name)


def _replace(module: nn.Module, name: str, host: torch.Tensor) -> None:
    """Swap a parameter (or buffer) for its host copy, keeping its kind and requires_grad."""
    if name in module._parameters:
        old = module._parameters[name]
        module._parameters[name] = nn.Parameter(host, requires_grad=old.requires_grad)
    else:
        module._buffers[name] = host
