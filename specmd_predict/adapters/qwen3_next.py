"""Qwen3-Next (Qwen/Qwen3-Next-80B-A3B): softmax, top-k, renormalized only if `norm_topk_prob`; one shared expert.

The routing is Qwen2-MoE's: each MoE block has a `shared_expert` MLP (behind a sigmoid `shared_expert_gate`)
that every token uses, so it is always resident. The hybrid attention (Gated DeltaNet / full attention) does
not touch routing. Layers in `mlp_only_layers`, or off the `decoder_sparse_step` grid, are dense MLPs.

The routing rule is written out once, in olmoe.py.
"""

from specmd_predict.adapters.olmoe import OlmoeAdapter


class Qwen3NextAdapter(OlmoeAdapter):
    model_type = "qwen3_next"
    shared_experts_attr = "shared_expert"
