"""DeepSeek-V3.2 (deepseek-ai/DeepSeek-V3.2-Exp): DeepSeek-V3's rule (sparse attention does not touch it).

Decoder layer i is an MoE layer when `mlp_layer_types[i] == "sparse"`; the others are dense MLPs. Each MoE
block has `shared_experts` used by every token (always resident).

The routing rule is DeepSeek-V3's, written out once in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class DeepseekV32Adapter(DeepseekV3Adapter):
    model_type = "deepseek_v32"
