"""Sarvam MoE (sarvam_moe): its config extends GLM-4 MoE's and the model is built from GLM-4 MoE's modules, so
the rule is DeepSeek-V3's (sigmoid scores, grouped biased top-k), written out once in deepseek_v3.py. The first
`first_k_dense_replace` decoder layers are dense; each MoE block has `shared_experts` (always resident).
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class SarvamMoeAdapter(DeepseekV3Adapter):
    model_type = "sarvam_moe"
