"""Qwen2-MoE (Qwen/Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B): softmax, top-k, renormalized only if `norm_topk_prob`.

Each MoE block also has one `shared_expert` MLP (mixed in through a sigmoid `shared_expert_gate`) that
every token uses: it is always resident and never predicted. Layers in `mlp_only_layers`, or off the
`decoder_sparse_step` grid, are dense MLPs and are not MoE layers (the base class skips them).

The routing rule is written out once, in olmoe.py.
"""

from specmd_predict.adapters.olmoe import OlmoeAdapter


class Qwen2MoeAdapter(OlmoeAdapter):
    model_type = "qwen2_moe"
    shared_experts_attr = "shared_expert"
