"""EXAONE MoE (LGAI-EXAONE, exaone_moe): DeepSeek-V3's rule, sigmoid scores, grouped biased top-k.

Decoder layer i is an MoE layer when `mlp_layer_types[i] == "sparse"`; the others are dense MLPs. Each MoE
block has `shared_experts` used by every token (always resident).

The routing rule is DeepSeek-V3's, written out once in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class ExaoneMoeAdapter(DeepseekV3Adapter):
    model_type = "exaone_moe"
