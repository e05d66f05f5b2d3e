"""GLM MoE with DeepSeek sparse attention (glm_moe_dsa): DeepSeek-V3.2's decoder layers and MoE block, only the
attention's index reuse differs, so the rule is DeepSeek-V3's, written out once in deepseek_v3.py. Decoder layer
i is an MoE layer when `mlp_layer_types[i] == "sparse"`; `shared_experts` are always resident.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class GlmMoeDsaAdapter(DeepseekV3Adapter):
    model_type = "glm_moe_dsa"
