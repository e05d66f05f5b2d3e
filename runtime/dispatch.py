"""How the runtime gets between a MoE block and its experts: transformers 5's experts-implementation registry.

transformers 5 decorates every experts class with `use_experts_implementation`: its `forward` looks up
`ALL_EXPERTS_FUNCTIONS[self.config._experts_implementation]` (falling back to the class's own eager
forward) and calls it as `fn(self, hidden_states, top_k_index, top_k_weights)`. `self.config` is the very
config object of the model (or of its text sub-model), so one name set there reaches every experts module.

    install(adapter, runner_for_layer)   # registers "specmd_offload", points each experts module at its runner

The registered function finds the runner on the module (`module._specmd_offload`); the runner remaps the
layer's n distinct expert ids to 0..n-1 (ascending, so every implementation groups and orders them as before)
and calls the implementation the model used before (`inner`) over a `SlotView`: the experts module with its
stacked tensors swapped for those n experts' slots gathered from the pool, and `num_experts = n`. The
family's own code then computes exactly what the unmodified model computes, at a cost that grows with the
layer's distinct experts (at most tokens x k), never with the slot count (grouped_mm, for one, cannot group
over more than 1,024 experts). Experts classes without the decorator get
the same runner through an instance-level `forward` (a module swap with the same signature). Another model
built from the same config object sees the new name too; its experts (no runner) run what they ran before.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, ExpertsInterface

from specmd_predict.adapters.base import MoEAdapter, UnsupportedModelError

OFFLOAD_IMPLEMENTATION = "specmd_offload"
RUNNER_ATTR = "_specmd_offload"
_NUM_EXPERTS_ATTRS = ("num_experts", "num_local_experts")

InnerForward = Callable[..., torch.Tensor]  # fn(experts_like, hidden_states, top_k_index, top_k_weights, ...)


class SlotView:
    """An experts module seen through a compact set of n experts: stacked tensors are [n, ...], `num_experts` is n.

    Every other attribute (activation, gating, flags) is read from the real module, so family code that
    takes `self` works unchanged. `plain` (from `plain_attrs(module)`, kept per module by the caller) copies
    the module's fixed attributes in up front: an experts kernel reads a dozen of them per call, and each read
    through `__getattr__` and nn.Module's lookup costs more than the whole copy.
    """

    def __init__(
        self,
        module: nn.Module,
        stacked: dict[str, torch.Tensor],
        num_experts: int,
        count_attrs: tuple[str, ...] | None = None,
        plain: dict[str, Any] | None = None,
    ):
        if plain:
            self.__dict__.update(plain)
        self.__dict__.update(stacked)
        for attr in count_attrs if count_attrs is not None else count_attrs_of(module):
            self.__dict__[attr] = num_experts
        self.__dict__["_module"] = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_module"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"SlotView is read-only (tried to set {name!r})")


def count_attrs_of(module: nn.Module) -> tuple[str, ...]:
    """The expert-count attributes `module` has (a SlotView overrides them); callers on the hot path keep this
    per module, since `hasattr` on a missing module attribute goes through nn.Module's slow lookup."""
    return tuple(attr for attr in _NUM_EXPERTS_ATTRS if hasattr(module, attr))


_MODULE_INTERNALS = frozenset(nn.Module().__dict__)  # _parameters, _buffers, _modules, hooks, training, ...


def plain_attrs(module: nn.Module) -> dict[str, Any]:
    """The module's own attributes (flags, config, activation and other submodules) that stay fixed while it
    is offloaded: everything in its `__dict__` but nn.Module's bookkeeping (`training` included, which
    `model.train()` changes), plus its submodules. Parameters and buffers are left to the view's lookup."""
    attrs = {name: value for name, value in module.__dict__.items() if name not in _MODULE_INTERNALS}
    attrs.update(module._modules)
    return attrs


# id(config) -> the implementation it named before offloading, for models that share that config object
_PREVIOUS_IMPLEMENTATION: dict[int, str | None] = {}


def offloaded_experts_forward(self: nn.Module, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """The registered experts implementation: hands the call to the module's offload runner."""
    runner = getattr(self, RUNNER_ATTR, None)
    if runner is None:  # another model built from the same config object: it runs as before
        return previous_forward(self)(self, hidden_states, *args, **kwargs)
    return runner(self, hidden_states, *args, **kwargs)


ExpertsInterface.register(OFFLOAD_IMPLEMENTATION, offloaded_experts_forward)


def uses_registry(module: nn.Module) -> bool:
    """Whether the experts class dispatches through `ALL_EXPERTS_FUNCTIONS` (decorated by transformers)."""
    forward = type(module).forward
    config = getattr(module, "config", None)
    return hasattr(forward, "__wrapped__") and hasattr(config, "_experts_implementation")


def check_sparse_experts(adapter: MoEAdapter) -> None:
    """The runtime needs experts called as (hidden_states, top_k_index, top_k_weights): a clear error otherwise."""
    module = adapter.experts(0)
    forward = type(module).forward
    forward = getattr(forward, "__wrapped__", forward)
    positional = [
        p
        for p in inspect.signature(forward).parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 4:  # self, hidden_states, top_k_index, top_k_weights
        raise UnsupportedModelError(
            f"{adapter.model_type}: its experts module {type(module).__name__} takes "
            f"({', '.join(p.name for p in positional[1:])}) rather than (hidden_states, top_k_index, top_k_weights); "
            "the offloading runtime only drives sparse experts called with the routed expert ids"
        )


def inner_forward(module: nn.Module) -> InnerForward:
    """What the model ran before offloading: its configured implementation, or the class's eager forward."""
    if hasattr(module, RUNNER_ATTR):
        raise ValueError("this model is already offloaded")
    return previous_forward(module) if uses_registry(module) else type(module).forward


def previous_forward(module: nn.Module) -> InnerForward:
    eager = type(module).forward.__wrapped__
    current = module.config._experts_implementation
    if current == OFFLOAD_IMPLEMENTATION:
        current = _PREVIOUS_IMPLEMENTATION.get(id(module.config), "eager")
    return ALL_EXPERTS_FUNCTIONS.get_interface(current, eager) if current not in (None, "eager") else eager


def install(adapter: MoEAdapter, runners: list[Callable]) -> None:
    """Point every MoE layer's experts module at its runner and switch the model to the offload implementation."""
    modules = [adapter.experts(layer) for layer in range(adapter.num_layers)]
    for module, runner in zip(modules, runners, strict=True):
        object.__setattr__(module, RUNNER_ATTR, runner)  # a plain attribute, not a submodule or parameter
    registry_modules = [m for m in modules if uses_registry(m)]
    for module in registry_modules:
        if module.config._experts_implementation != OFFLOAD_IMPLEMENTATION:
            _PREVIOUS_IMPLEMENTATION[id(module.config)] = module.config._experts_implementation
    if registry_modules:
        set_implementation = getattr(adapter.model, "set_experts_implementation", None)
        if set_implementation is not None:
            set_implementation(OFFLOAD_IMPLEMENTATION)
        for module in registry_modules:  # sub-configs the model-level setter did not reach
            if module.config._experts_implementation != OFFLOAD_IMPLEMENTATION:
                module.config._experts_implementation = OFFLOAD_IMPLEMENTATION
    for module in modules:
        if not uses_registry(module):
            module.forward = functools.partial(offloaded_experts_forward, module)


def is_offloaded(model: nn.Module) -> bool:
    return any(hasattr(m, RUNNER_ATTR) for m in model.modules())
