"""dots.llm1 (rednote-hilab/dots.llm1.inst): DeepSeek-V3's rule, sigmoid scores, grouped biased top-k.

The first `first_k_dense_replace` decoder layers are dense MLPs, not MoE layers. Each MoE block has
`shared_experts` used by every token (always resident).

The routing rule is DeepSeek-V3's, written out once in deepseek_v3.py.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class Dots1Adapter(DeepseekV3Adapter):
    model_type = "dots1"
