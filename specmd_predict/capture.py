"""Record what a model's own routers did during a forward: router inputs and their Routing, per MoE layer.

    with record_routing(adapter) as record:
        model(input_ids)
    record.inputs[l]     # list of [T, D] router inputs seen at MoE layer l (one entry per forward)
    record.routings[l]   # list of Routing at MoE layer l

This is the ground truth the harvest stores and the adapter tests compare `adapter.route` against.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from specmd_predict.adapters.base import MoEAdapter
from specmd_predict.routing import Routing


@dataclass
class RoutingRecord:
    inputs: list[list[torch.Tensor]] = field(default_factory=list)
    routings: list[list[Routing]] = field(default_factory=list)

    def clear(self) -> None:
        for per_layer in (*self.inputs, *self.routings):
            per_layer.clear()


@contextmanager
def record_routing(
    adapter: MoEAdapter, layers: list[int] | None = None, keep_inputs: bool = True, keep_logits: bool = False
) -> Iterator[RoutingRecord]:
    """Hook every router (or those of `layers`; `adapter.routing_module` names the hooked module for families
    whose router returns only logits); hooks are removed on exit, even after an error."""
    record = RoutingRecord(
        inputs=[[] for _ in range(adapter.num_layers)], routings=[[] for _ in range(adapter.num_layers)]
    )
    handles = []
    for layer in range(adapter.num_layers) if layers is None else layers:

        def hook(module, args, output, layer=layer):
            hidden_TD, routing = adapter.routing_from_hook(layer, args, output)
            if not keep_logits:
                routing.logits_TE = None
            record.routings[layer].append(routing)
            if keep_inputs:
                record.inputs[layer].append(hidden_TD.detach())

        handles.append(adapter.routing_module(layer).register_forward_hook(hook))
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()
