"""One forward per batch, and the per-token harvest columns of that batch as numpy arrays.

    with BatchRecorder(model, adapter, hidden_layers=[0, 3], keep_router_logits=False, prompt_tokens=192) as rec:
        columns = rec(ids_BS, first_sequence_id=0)     # dict: sequence_id [T], ..., expert_ids [T, L, K], ...

The forward runs over whole sequences (no KV cache): attention is causal, so the routing of token t is the
same as when it is decoded one step at a time after a prefill of tokens < t. The routers' own outputs are
taken from `specmd_predict.capture.record_routing` hooks, so the stored expert ids are exactly what the
model selected, and the stored hidden states are exactly the router inputs. Only the decoder runs (the LM
head's [T, vocab] logits are never needed).
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import torch
from torch import nn

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.capture import RoutingRecord, record_routing


class BatchRecorder:
    def __init__(
        self,
        model: nn.Module,
        adapter: MoEAdapter,
        hidden_layers: list[int],
        keep_router_logits: bool,
        prompt_tokens: int,
    ):
        self.model = model
        self.adapter = adapter
        self.hidden_layers = list(hidden_layers)
        self.keep_router_logits = keep_router_logits
        self.prompt_tokens = prompt_tokens
        self._decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
        self._stack = ExitStack()
        self._routing: RoutingRecord | None = None
        self._inputs: RoutingRecord | None = None

    def __enter__(self) -> BatchRecorder:
        all_layers = self.hidden_layers == list(range(self.adapter.num_layers))
        # One set of hooks when every layer's input is kept; otherwise inputs only where asked, so the
        # activations of the other layers are freed as the forward goes.
        self._routing = self._stack.enter_context(
            record_routing(self.adapter, keep_inputs=all_layers, keep_logits=self.keep_router_logits)
        )
        self._inputs = self._routing
        if not all_layers and self.hidden_layers:
            self._inputs = self._stack.enter_context(record_routing(self.adapter, layers=self.hidden_layers))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._routing = self._inputs = None

    @torch.inference_mode()
    def forward(self, ids_BS: torch.Tensor) -> None:
        """The bare forward a harvest runs (also what the benchmark times without hooks)."""
        self._decoder(input_ids=ids_BS, use_cache=False)

    @torch.inference_mode()
    def __call__(self, ids_BS: torch.Tensor, first_sequence_id: int) -> dict[str, np.ndarray]:
        if self._routing is None:
            raise RuntimeError("use BatchRecorder inside a `with` block")
        self._routing.clear()
        self._inputs.clear()
        batch, seq_len = ids_BS.shape
        self.forward(ids_BS)
        num_layers = self.adapter.num_layers
        calls = [len(self._routing.routings[l]) for l in range(num_layers)]
        if calls != [1] * num_layers:  # a family that calls a router twice per forward needs its own handling
            raise RuntimeError(f"expected one router call per MoE layer per forward, got {calls}")
        routings = [self._routing.routings[l][0] for l in range(num_layers)]
        position_T = np.tile(np.arange(seq_len, dtype=np.int32), batch)
        columns = {
            "sequence_id": np.repeat(np.arange(first_sequence_id, first_sequence_id + batch, dtype=np.int32), seq_len),
            "position": position_T,
            "token_id": ids_BS.reshape(-1).cpu().numpy().astype(np.int32),
            "is_prompt": position_T < self.prompt_tokens,
            "expert_ids": _stack_layers([r.expert_ids_TK for r in routings], torch.int16),
            "expert_weights": _stack_layers([r.weights_TK for r in routings], torch.float16),
        }
        if self.hidden_layers:
            columns["hidden"] = _stack_layers([self._inputs.inputs[l][0] for l in self.hidden_layers], torch.float16)
        if self.keep_router_logits:
            columns["router_logits"] = _stack_layers([r.logits_TE for r in routings], torch.float16)
        self._routing.clear()
        self._inputs.clear()
        return columns


def _stack_layers(per_layer: list[torch.Tensor], dtype: torch.dtype) -> np.ndarray:
    """L tensors [T, X] -> numpy [T, L, X] of `dtype` (cast per layer first: half the bytes to stack)."""
    return torch.stack([t.to(dtype) for t in per_layer], dim=1).cpu().numpy()
