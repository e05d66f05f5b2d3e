"""Bailing hybrid (inclusionAI Ling/Ring linear, bailing_hybrid): DeepSeek-V3's rule.

Decoder layer i is an MoE layer when `mlp_layer_types[i] == "sparse"`; the others are dense MLPs. Each MoE
block has `shared_experts` used by every token (always resident).

The routing rule is DeepSeek-V3's, written out once in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class BailingHybridAdapter(DeepseekV3Adapter):
    model_type = "bailing_hybrid"
