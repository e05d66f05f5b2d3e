"""GLM-4.5V / 4.6V (zai-org/GLM-4.5V; text model `glm4v_moe_text`): GLM-4.5's (DeepSeek-V3's) routing rule.

The first `first_k_dense_replace` decoder layers are dense MLPs, not MoE layers. Each MoE block has
`shared_experts` used by every token (always resident). The vision tower does not route; registered under
the text config's type, which `get_adapter` reads for the image-text checkpoint.

The routing rule is DeepSeek-V3's, written out once in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class Glm4vMoeAdapter(DeepseekV3Adapter):
    model_type = "glm4v_moe_text"
