"""Qwen3-MoE (Qwen/Qwen3-30B-A3B): softmax over all experts, top-k, renormalized only if `norm_topk_prob`.

Layers listed in `mlp_only_layers`, or not on the `decoder_sparse_step` grid, are dense MLPs; the base
class skips them (they have no experts module), so `decoder_indices` lists only the MoE layers.

The routing rule is written out once, in olmoe.py.
"""

from specmd_predict.adapters.olmoe import OlmoeAdapter


class Qwen3MoeAdapter(OlmoeAdapter):
    model_type = "qwen3_moe"
