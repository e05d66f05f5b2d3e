"""A.X-K1 (axk1): DeepSeek-V3's router unchanged (`AXK1TopkRouter(DeepseekV3TopkRouter): pass`).

The MoE block adds a `post_mlp_layernorm` on its output, which routing never reads. Decoder layer i is an MoE
layer when `mlp_layer_types[i] == "sparse"`; each MoE block has `shared_experts` (always resident).
The rule is written out once, in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class AXK1Adapter(DeepseekV3Adapter):
    model_type = "axk1"
