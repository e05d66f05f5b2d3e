"""Solar Open (upstage, solar_open): DeepSeek-V3's rule, sigmoid scores, grouped biased top-k.

Every decoder layer is an MoE layer. Each MoE block has `shared_experts` used by every token (always
resident).

The routing rule is DeepSeek-V3's, written out once in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class SolarOpenAdapter(DeepseekV3Adapter):
    model_type = "solar_open"
