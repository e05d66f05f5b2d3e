"""How tables and plots name a layer: "MoE layer i (decoder layer d)".

    layer_name(1, [1, 2, 3])      # 'MoE layer 1 (decoder layer 2)'
    layer_tick(1, [1, 2, 3])      # '1 (2)', for axes labelled LAYER_AXIS

The project counts MoE layers from 0 (../shared/DESIGN.md's ExpertKey); a model with dense decoder layers (DeepSeek's
`first_k_dense_replace`, Qwen's `mlp_only_layers`) puts them at other decoder indices, which
`MoEAdapter.decoder_indices` gives. Without those indices the decoder layer is left out rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

LAYER_AXIS = "MoE layer (decoder layer)"


def layer_name(layer: int, decoder_indices: Sequence[int] | None = None) -> str:
    if decoder_indices is None:
        return f"MoE layer {layer}"
    return f"MoE layer {layer} (decoder layer {decoder_indices[layer]})"


def layer_tick(layer: int, decoder_indices: Sequence[int] | None = None) -> str:
    return str(layer) if decoder_indices is None else f"{layer} ({decoder_indices[layer]})"
