"""Qwen3.5-MoE (qwen3_5_moe; the text model, config type `qwen3_5_moe_text`): softmax, top-k, always renormalized.

Each MoE block has a `shared_expert` MLP (behind a sigmoid `shared_expert_gate`) every token uses: always
resident. Every decoder layer is an MoE layer; the hybrid attention does not touch routing. Registered
under the text config's type, which is what `get_adapter` reads (also for the vision-language checkpoint).

The routing rule is written out once, in olmoe.py.
"""

from specmd_predict.adapters.qwen3_vl_moe import Qwen3VLMoeAdapter


class Qwen35MoeAdapter(Qwen3VLMoeAdapter):
    model_type = "qwen3_5_moe_text"
    shared_experts_attr = "shared_expert"
