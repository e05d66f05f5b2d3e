"""Token ids for predictors scored on harvested rows: a hash-routed layer (DeepSeek-V4's first MoE layers) chooses
its experts from the token id, so router reuse replayed on a harvest's rows needs those rows' `token_id` column.
At run time the adapter watches the model's input instead (`MoEAdapter.watch_routing_inputs`).

    columns = ["hidden", "expert_ids"] + token_columns(predictors.values(), split)
    with rows_token_ids(predictors.values(), batch.get("token_id")):   # the batch's rows, in the hidden's order
        probs_NHE = predictor.predict(layer, hidden_ND)

Predictors that apply no hash-routed router (every family but DeepSeek-V4, trained banks) are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

import torch

from specmd_predict.adapters.base import MoEAdapter

TOKEN_COLUMN = "token_id"  # the harvest's column of each row's input token (data_pipelines/writer.py)


def hash_routed_adapters(objects: Iterable) -> list[MoEAdapter]:
    """The adapters with hash-routed layers that `objects` apply: predictors holding an `adapter` (router reuse),
    or prefetch policies holding such a predictor as `predictor`."""
    found: dict[int, MoEAdapter] = {}
    for obj in objects:
        adapter = getattr(getattr(obj, "predictor", obj), "adapter", None)
        if isinstance(adapter, MoEAdapter) and adapter.hash_routed_layers:
            found[id(adapter)] = adapter
    return list(found.values())


def token_columns(objects: Iterable, split) -> list[str]:
    """[TOKEN_COLUMN] when some of `objects` route hash-routed layers and `split` (a datasets.Dataset) has the
    column, else [] (nothing more to read)."""
    needed = bool(hash_routed_adapters(objects))
    return [TOKEN_COLUMN] if needed and TOKEN_COLUMN in split.column_names else []


@contextmanager
def rows_token_ids(objects: Iterable, token_ids_N: torch.Tensor | None) -> Iterator[None]:
    """Inside the block, the hash-routed adapters of `objects` route rows with `token_ids_N`; a clear ValueError
    when they need token ids and the rows have none (a trace or an old harvest without a token_id column)."""
    adapters = hash_routed_adapters(objects)
    if adapters and token_ids_N is None:
        layers = adapters[0].hash_routed_layers
        raise ValueError(
            f"MoE layers {layers} of this {adapters[0].model_type} model are hash-routed (their experts follow from "
            f"the token id), and these rows have no {TOKEN_COLUMN} column: harvest again with specmd-harvest"
        )
    with ExitStack() as stack:
        for adapter in adapters:
            stack.enter_context(adapter.routing_tokens(token_ids_N))
        yield
