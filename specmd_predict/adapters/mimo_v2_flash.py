"""MiMo-V2-Flash (XiaomiMiMo/MiMo-V2-Flash): DeepSeek-V3's rule, sigmoid, grouped biased top-k.

Decoder layer i is an MoE layer when `mlp_layer_types[i] == "sparse"`; the others are dense MLPs. No shared
experts.

The routing rule is DeepSeek-V3's, written out once in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class MiMoV2FlashAdapter(DeepseekV3Adapter):
    model_type = "mimo_v2_flash"
    shared_experts_attr = None
