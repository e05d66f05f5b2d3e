"""Hunyuan v4 (hy_v4): GLM-4 MoE Lite's router and MoE block unchanged (`HYV4TopkRouter: pass`), i.e.
DeepSeek-V3's rule. Decoder layer i is an MoE layer when `mlp_layer_types[i] == "sparse"`; each MoE block has
`shared_experts` (always resident). The rule is written out once, in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class HYV4Adapter(DeepseekV3Adapter):
    model_type = "hy_v4"
