"""One forward per batch, and the per-token harvest columns of that batch, copied to the host without waiting.

    with BatchRecorder(model, adapter, hidden_layers=[0, 3], keep_router_logits=False, prompt_tokens=192) as rec:
        columns = rec(ids_BS, first_sequence_id=0)     # dict: sequence_id [T], ..., expert_ids [T, L, K], ...
        pending = rec.record(ids_BS, 0)                # the same, asynchronously: copies may still be in flight
        columns = pending.columns(); ...; pending.release()   # (data_pipelines.background does this on a thread)

The forward runs over whole sequences (no KV cache): attention is causal, so the routing of token t is the
same as when it is decoded one step at a time after a prefill of tokens < t. The routers' own outputs are
taken from `specmd_predict.capture.record_routing` hooks, so the stored expert ids are exactly what the
model selected, and the stored hidden states are exactly the router inputs. Only the decoder runs (the LM
head's [T, vocab] logits are never needed).

Host copies: each column's layers are cast and stacked on the GPU they live on, then copied into one of
`num_buffers` reusable host buffer sets ([T, L, X], the row layout Arrow stores, so the writer copies nothing
more), pinned when the model is on CUDA, with `non_blocking=True` on a side stream; the batch's columns become
readable once its CUDA events complete. On CPU (and for layers spread over several devices by a device map)
each layer is cast straight into its slice of the buffer. `record()` blocks only when every buffer set is
still in flight: that is the bound on host memory.
"""

from __future__ import annotations

import queue
from contextlib import ExitStack
from typing import Self

import numpy as np
import torch
from torch import nn

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.capture import RoutingRecord, record_routing

DEFAULT_NUM_BUFFERS = 3  # one being filled, up to two waiting for (or in) the writer


def enter_routing_hooks(
    stack: ExitStack, adapter: MoEAdapter, hidden_layers: list[int], keep_router_logits: bool
) -> tuple[RoutingRecord, RoutingRecord]:
    """Enter the routing hooks of a harvest on `stack`: (routing record, record holding the kept router inputs).

    One set of hooks when every layer's input is kept; otherwise inputs only where asked, so the
    activations of the other layers are freed as the forward goes. Shared by the forward harvest
    (BatchRecorder) and the generate harvest (data_pipelines.generate.GenerateRecorder).
    """
    all_layers = hidden_layers == list(range(adapter.num_layers))
    routing = stack.enter_context(record_routing(adapter, keep_inputs=all_layers, keep_logits=keep_router_logits))
    inputs = routing
    if not all_layers and hidden_layers:
        inputs = stack.enter_context(record_routing(adapter, layers=hidden_layers))
    return routing, inputs


class RoutingHooks:
    """Base of the harvest recorders (BatchRecorder, generate.GenerateRecorder): what both record (model, adapter,
    the MoE layers whose router inputs are kept, whether router logits are kept), and their routing hooks, entered
    on `with` and removed on exit."""

    def __init__(self, model: nn.Module, adapter: MoEAdapter, hidden_layers: list[int], keep_router_logits: bool):
        self.model = model
        self.adapter = adapter
        self.hidden_layers = list(hidden_layers)
        self.keep_router_logits = keep_router_logits
        self._stack = ExitStack()
        self._routing: RoutingRecord | None = None
        self._inputs: RoutingRecord | None = None

    def _start_batch(self) -> None:
        """Empty the records for a new batch (an error outside the `with` block, where there are none)."""
        if self._routing is None:
            raise RuntimeError(f"use {type(self).__name__} inside a `with` block")
        self._routing.clear()
        self._inputs.clear()

    def __enter__(self) -> Self:
        self._routing, self._inputs = enter_routing_hooks(
            self._stack, self.adapter, self.hidden_layers, self.keep_router_logits
        )
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._routing = self._inputs = None


class PendingBatch:
    """One batch's columns on their way to the host: `columns()` waits for the copies, `release()` frees
    the buffers for a later batch (call it once the columns have been written)."""

    def __init__(self, small: dict[str, np.ndarray], layered: dict[str, torch.Tensor], events, on_release):
        self._small = small
        self._layered = layered  # name -> host tensor [T, L, X] (a view into a reusable buffer)
        self._events = events
        self._on_release = on_release

    def columns(self) -> dict[str, np.ndarray]:
        for event in self._events:
            event.synchronize()
        columns = dict(self._small)
        for name, host_TLX in self._layered.items():
            columns[name] = host_TLX.numpy()  # a view into the buffer: valid until release()
        return columns

    def release(self) -> None:
        if self._on_release is not None:
            self._on_release()
            self._on_release = None


class BatchRecorder(RoutingHooks):
    def __init__(
        self,
        model: nn.Module,
        adapter: MoEAdapter,
        hidden_layers: list[int],
        keep_router_logits: bool,
        prompt_tokens: int,
        num_buffers: int = DEFAULT_NUM_BUFFERS,
    ):
        super().__init__(model, adapter, hidden_layers, keep_router_logits)
        self.prompt_tokens = prompt_tokens
        self._decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
        self.input_device = input_device(model)
        self._pin = torch.cuda.is_available() and any(p.device.type == "cuda" for p in model.parameters())
        self._free: queue.Queue[dict[str, torch.Tensor]] = queue.Queue()
        for _ in range(num_buffers):
            self._free.put({})  # buffers are allocated on first use, at the batch's size
        self._copy_streams: dict[torch.device, torch.cuda.Stream] = {}

    @torch.inference_mode()
    def forward(self, ids_BS: torch.Tensor) -> None:
        """The bare forward a harvest runs (also what the benchmark times without hooks)."""
        self._decoder(input_ids=ids_BS.to(self.input_device, non_blocking=True), use_cache=False)

    @torch.inference_mode()
    def __call__(self, ids_BS: torch.Tensor, first_sequence_id: int) -> dict[str, np.ndarray]:
        """The columns of one batch, synchronously (copies of the buffers, which go back to the pool)."""
        pending = self.record(ids_BS, first_sequence_id)
        try:
            return {name: np.ascontiguousarray(values) for name, values in pending.columns().items()}
        finally:
            pending.release()

    @torch.inference_mode()
    def record(self, ids_BS: torch.Tensor, first_sequence_id: int) -> PendingBatch:
        """Run the forward and start the copies of its columns to the host; returns before they land."""
        self._start_batch()
        batch, seq_len = ids_BS.shape
        self.forward(ids_BS)
        num_layers = self.adapter.num_layers
        calls = [len(self._routing.routings[l]) for l in range(num_layers)]
        if calls != [1] * num_layers:  # a family that calls a router twice per forward needs its own handling
            raise RuntimeError(f"expected one router call per MoE layer per forward, got {calls}")
        routings = [self._routing.routings[l][0] for l in range(num_layers)]
        position_T = np.tile(np.arange(seq_len, dtype=np.int32), batch)
        small = {
            "sequence_id": np.repeat(np.arange(first_sequence_id, first_sequence_id + batch, dtype=np.int32), seq_len),
            "position": position_T,
            "token_id": ids_BS.reshape(-1).cpu().numpy().astype(np.int32),
            "is_prompt": position_T < self.prompt_tokens,
        }
        per_layer = {
            "expert_ids": ([r.expert_ids_TK for r in routings], torch.int16),
            "expert_weights": ([r.weights_TK for r in routings], torch.float16),
        }
        if self.hidden_layers:
            per_layer["hidden"] = ([self._inputs.inputs[l][0] for l in self.hidden_layers], torch.float16)
        if self.keep_router_logits:
            per_layer["router_logits"] = ([r.logits_TE for r in routings], torch.float16)
        buffers = self._free.get()  # blocks while every buffer set is in flight: bounded host memory
        try:
            layered, events = self._copy_to_host(per_layer, buffers)
        except BaseException:
            self._free.put(buffers)
            raise
        finally:
            self._routing.clear()
            self._inputs.clear()
        return PendingBatch(small, layered, events, lambda: self._free.put(buffers))

    def _copy_to_host(self, per_layer: dict, buffers: dict[str, torch.Tensor]):
        """Copy each column's L tensors [T, X] into `buffers` ([T_max, L, X] host tensors, grown as needed).

        All on one GPU (the usual case): cast and stack there, then one contiguous copy, non-blocking on a side
        stream, so the next forward starts at once. On CPU: each layer is cast straight into its slice. Layers
        spread over several GPUs (a device map): per layer, blocking (the forward of such a model dominates).
        """
        layered, devices = {}, set()
        for name, (tensors, dtype) in per_layer.items():
            num_tokens, width = tensors[0].shape
            held = buffers.get(name)
            if held is None or held.shape[0] < num_tokens or held.shape[1:] != (len(tensors), width):
                held = buffers[name] = torch.empty((num_tokens, len(tensors), width), dtype=dtype, pin_memory=self._pin)
            host_TLX = held[:num_tokens]
            on = {t.device for t in tensors}
            device = next(iter(on))
            if len(on) == 1 and device.type == "cuda":
                stream = self._copy_stream(device)
                if device not in devices:  # copies start once the forward has produced the tensors
                    stream.wait_stream(torch.cuda.current_stream(device))
                    devices.add(device)
                with torch.cuda.stream(stream):
                    stacked_TLX = torch.stack([t.to(dtype) for t in tensors], dim=1)
                    host_TLX.copy_(stacked_TLX, non_blocking=True)
                for tensor_TX in tensors:  # the allocator keeps them until the copy stream has read them
                    tensor_TX.record_stream(stream)
            else:
                for l, tensor_TX in enumerate(tensors):
                    host_TLX[:, l].copy_(tensor_TX)  # casts; from a GPU this waits for the copy
            layered[name] = host_TLX
        events = []
        for device in devices:
            event = torch.cuda.Event()
            event.record(self._copy_stream(device))
            events.append(event)
        return layered, events

    def _copy_stream(self, device: torch.device) -> torch.cuda.Stream:
        stream = self._copy_streams.get(device)
        if stream is None:
            stream = self._copy_streams[device] = torch.cuda.Stream(device)
        return stream


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the input embedding's execution device (accelerate's map may put it anywhere)."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        embedding = model.get_input_embeddings()
        hook = getattr(embedding, "_hf_hook", None)
        execution = getattr(hook, "execution_device", None)
        if execution is not None:
            return torch.device("cuda", execution) if isinstance(execution, int) else torch.device(execution)
        first = next(iter(device_map.values()))
        if isinstance(first, int):
            return torch.device("cuda", first)
        return torch.device("cpu") if first in ("cpu", "disk") else torch.device(first)
    return next(model.parameters()).device
