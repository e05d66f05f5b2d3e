"""What every MoE adapter answers, and the structure discovery they share.

An adapter reduces one model family to the project's vocabulary (../shared/DESIGN.md section 3): the MoE layers
in order, each layer's router and experts modules, E, k, whether top-k weights are renormalized, bytes
per expert, and `route()`: the family's own routing rule applied to any hidden state (router reuse).

Hash-routed layers (DeepSeek-V4's first MoE layers) choose their experts from the token id through a frozen
table, not from the hidden state: `hash_table(layer)` gives that table, and `route` / `selection_scores` of such a
layer take the token ids too (`token_ids_T`, or those `watch_routing_inputs` saw the model read in the pass in
flight). A prediction for such a layer is exact once the token is known: `hash_table(layer)[token_ids_T]`.

A family file subclasses `MoEAdapter`, names its attributes, and writes `selection_scores` and `route`
out explicitly so the rule is readable in one place; tests check it against the model's own routers.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from specmd_predict.routing import Routing


class UnsupportedModelError(ValueError):
    """The model is not an MoE model of a family the project has an adapter for."""


class MoEAdapter(ABC):
    model_type: ClassVar[str]  # `config.model_type` this adapter is registered under
    moe_block_attr: ClassVar[str | None] = "mlp"  # attribute of a decoder layer holding its MoE block (None:
    # the decoder layer itself holds router and experts, as in Gemma 4)
    router_attr: ClassVar[str] = "gate"  # attribute of the MoE block holding its router
    shared_experts_attr: ClassVar[str | None] = None  # always-active experts, if the family has them
    harvest_refusal: ClassVar[str | None] = None  # why a harvest cannot record this family (None: it can)
    token_ids_T: torch.Tensor | None = None  # the pass in flight's token ids, where watched (hash-routed layers)

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config.get_text_config()
        self.decoder_indices: list[int] = []
        self.moe_blocks: list[nn.Module] = []
        for index, layer in enumerate(_decoder_layers(model)):
            block = layer if self.moe_block_attr is None else getattr(layer, self.moe_block_attr, None)
            if block is not None and self.is_moe_block(block):
                self.decoder_indices.append(index)
                self.moe_blocks.append(block)
        if not self.moe_blocks:
            raise UnsupportedModelError(f"{self.model_type} model has no MoE layers (all layers are dense)")

    def is_moe_block(self, block: nn.Module) -> bool:
        """Whether a decoder layer's `moe_block_attr` module is an MoE block (dense layers hold a plain MLP)."""
        return hasattr(block, "experts") and hasattr(block, self.router_attr)

    # ---- structure -------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.moe_blocks)

    @property
    def num_experts(self) -> int:
        return self.router(0).weight.shape[0]

    @property
    def top_k(self) -> int:
        return self.config.num_experts_per_tok

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    @abstractmethod
    def renormalize(self) -> bool:
        """Whether the top-k weights are rescaled to sum to one (then maybe times a constant: DeepSeek's
        `routed_scaling_factor`)."""

    def router(self, layer: int) -> nn.Module:
        # looked up once per layer and kept: router reuse asks for it at every decode layer, and the modules never
        # move (`offload` replaces a router's parameters, never the module, so its parameters are read at each call)
        routers = self.__dict__.get("_router_modules")
        if routers is None:
            routers = self._router_modules = [getattr(block, self.router_attr) for block in self.moe_blocks]
        return routers[layer]

    def experts(self, layer: int) -> nn.Module:
        return self.moe_blocks[layer].experts

    def shared_experts(self, layer: int) -> nn.Module | None:
        """Experts every token uses: always resident, never offloaded or predicted."""
        return getattr(self.moe_blocks[layer], self.shared_experts_attr, None) if self.shared_experts_attr else None

    def expert_tensor_names(self, layer: int = 0) -> list[str]:
        """Parameters of the experts module stacked over experts (leading dim E): one slice per expert."""
        tensors = dict(self.experts(layer).named_parameters(recurse=False))
        tensors.update(dict(self.experts(layer).named_buffers(recurse=False)))
        return sorted(name for name, t in tensors.items() if t.dim() >= 1 and t.shape[0] == self.num_experts)

    def expert_bytes(self, dtype: torch.dtype | None = None) -> int:
        """Bytes of one routed expert, at its stored dtype or at `dtype` if given."""
        experts = self.experts(0)
        total = 0
        for name in self.expert_tensor_names(0):
            t = getattr(experts, name)
            itemsize = (dtype or t.dtype).itemsize
            total += t[0].numel() * itemsize
        return total

    def total_expert_bytes(self, dtype: torch.dtype | None = None) -> int:
        return self.expert_bytes(dtype) * self.num_experts * self.num_layers

    # ---- routing ---------------------------------------------------------------------------------------
    @abstractmethod
    def selection_scores(self, layer: int, hidden_TD: torch.Tensor) -> torch.Tensor:
        """[T, E] scores the family takes its top-k over (higher = more likely selected); top-k of them gives
        `route`'s experts. Not always probabilities: logits (gpt-oss, PhiMoE), biased sigmoid scores, and -inf
        (DeepSeek-V3 family) or 0 (DeepSeek-V2) for experts outside the kept groups."""

    @abstractmethod
    def route(self, layer: int, hidden_TD: torch.Tensor) -> Routing:
        """Apply layer `layer`'s router to any hidden state with the family's exact rule."""

    def calls_per_forward(self, layer: int) -> int:
        """How many times MoE layer `layer` routes each token in one forward: 1 but in a looped block."""
        return 1

    def hash_table(self, layer: int) -> torch.Tensor | None:
        """[vocab, K] expert ids of a hash-routed layer (its choice is a frozen function of the token id);
        None for a layer routed from the hidden state (every layer of most families)."""
        return None

    @property
    def hash_routed_layers(self) -> list[int]:
        return [layer for layer in range(self.num_layers) if self.hash_table(layer) is not None]

    def watch_routing_inputs(self) -> RoutingWatch:
        """Keep what routing reads besides the hidden state as the model runs (device tensors, never read on the
        host), for `route` and `selection_scores` called with the hidden state alone: router reuse at run time.
        Here the token ids of hash-routed layers (a forward pre-hook on the decoder sets `token_ids_T`); families
        whose routers read an earlier router's state (Zaya) add their own. `.remove()` ends it."""
        if not self.hash_routed_layers:
            return RoutingWatch([])

        def see(module: nn.Module, args: tuple, kwargs: dict) -> None:
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            self.token_ids_T = None if input_ids is None else input_ids.reshape(-1)

        return RoutingWatch([_decoder_model(self.model).register_forward_pre_hook(see, with_kwargs=True)])

    @contextmanager
    def routing_tokens(self, token_ids_T: torch.Tensor) -> Iterator[None]:
        """Inside the block, `route` / `selection_scores` called with the hidden state alone read `token_ids_T`
        as the rows' token ids (a harvest's `token_id` column, where watching the model is not possible: router
        reuse replayed on harvested rows). The ids watched before are back afterwards."""
        saved = self.token_ids_T
        self.token_ids_T = token_ids_T.reshape(-1)
        try:
            yield
        finally:
            self.token_ids_T = saved

    def token_ids_for(self, layer: int, num_tokens: int, token_ids_T: torch.Tensor | None) -> torch.Tensor:
        """The token ids of a hash-routed layer's `num_tokens` rows: `token_ids_T` if given, else the watched ones
        (a clear error where neither fits)."""
        if token_ids_T is None:
            token_ids_T = self.token_ids_T
        if token_ids_T is None or token_ids_T.numel() != num_tokens:
            raise ValueError(
                f"MoE layer {layer} of this {self.model_type} model is hash-routed (its experts follow from the token "
                f"id): pass token_ids_T for the {num_tokens} rows, or call watch_routing_inputs() before the forward"
            )
        return token_ids_T.reshape(-1)

    def routing_from_router_output(self, output) -> Routing:
        """Turn what the router module returned (logits, weights, ids in transformers 5) into a Routing."""
        logits, weights, ids = output
        return Routing(ids.reshape(-1, ids.shape[-1]), weights.reshape(-1, weights.shape[-1]), logits)

    def routing_module(self, layer: int) -> nn.Module:
        """The module whose forward hook sees layer `layer`'s routing (`capture.record_routing`): the router."""
        return self.router(layer)

    def routing_from_hook(self, layer: int, args: tuple, output) -> tuple[torch.Tensor, Routing]:
        """(router input [T, D], Routing) from `routing_module`'s forward arguments and output."""
        return args[0].reshape(-1, args[0].shape[-1]), self.routing_from_router_output(output)

    # ---- identity --------------------------------------------------------------------------------------
    def router_fingerprint(self) -> str:
        """Hash of every layer's `routing_tensors` (router weights and biases such as DeepSeek-V3's
        e_score_correction_bias, which changes the choice), rounded to bf16 so fp32 and bf16 loads agree."""
        digest = hashlib.sha256()
        for layer in range(self.num_layers):
            for _, tensor in self.routing_tensors(layer):
                digest.update(tensor.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
        return digest.hexdigest()[:16]

    def routing_tensors(self, layer: int) -> list[tuple[str, torch.Tensor]]:
        """Every tensor layer `layer`'s routing rule reads, by name: the router's parameters and buffers.
        Families that keep a routing bias on the MoE block instead (LFM2-MoE, MiniMax-M2) add it."""
        router = self.router(layer)
        return sorted([*router.named_parameters(), *router.named_buffers()], key=lambda item: item[0])

    def identity(self) -> dict:
        """What a harvest or predictor bank records to recognize its model later."""
        return {
            "model_type": self.model_type,
            "num_layers": self.num_layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "hidden_size": self.hidden_size,
            "router_fingerprint": self.router_fingerprint(),
        }


class RoutingWatch:
    """The hooks of `MoEAdapter.watch_routing_inputs`; `remove()` ends them."""

    def __init__(self, handles: list[RemovableHandle]):
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _decoder_model(model: nn.Module) -> nn.Module:
    return model.get_decoder() if hasattr(model, "get_decoder") else model


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    decoder = _decoder_model(model)
    # get_decoder() returns the model itself for some families (Llama 4): look in `.model` too
    for candidate in (decoder, getattr(model, "model", None)):
        layers = getattr(candidate, "layers", None)
        if layers is None:
            layers = getattr(candidate, "blocks", None)  # DBRX
        if layers is not None:
            return layers
    raise UnsupportedModelError(f"cannot find decoder layers in {type(model).__name__}")


def check_identity(expected: dict, actual: dict, what: str = "predictor bank") -> None:
    """Raise a clear error when `expected` (recorded) and `actual` (the model at hand) differ."""
    diffs = [f"{k}: {expected.get(k)!r} vs model's {actual.get(k)!r}" for k in actual if expected.get(k) != actual[k]]
    if diffs:
        raise ValueError(f"this {what} was made for a different model ({'; '.join(diffs)})")
