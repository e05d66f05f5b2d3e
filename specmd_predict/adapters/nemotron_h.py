"""Nemotron-H MoE (NVIDIA Nemotron 3 Nano, nemotron_h): DeepSeek-V3's rule on hybrid Mamba layers.

The MoE block is the decoder layer's `mixer` in layers whose `layers_block_type` is "moe" (the others are
Mamba, attention or dense MLP mixers). Routing reads the hidden state before the optional latent
projection. Experts are non-gated (`up_proj [E, I, D]`, `down_proj [E, D, I]`); each MoE block has
`shared_experts` used by every token (always resident).

The routing rule is DeepSeek-V3's, written out once in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class NemotronHAdapter(DeepseekV3Adapter):
    model_type = "nemotron_h"
    moe_block_attr = "mixer"
