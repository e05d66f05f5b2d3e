"""Sarvam MLA (sarvam_mla): built from DeepSeek-V3's modules (router `DeepseekV3TopkRouter`), so the rule is
DeepSeek-V3's, written out once in deepseek_v3.py. Dense first decoder layers; `shared_experts` always resident.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class SarvamMlaAdapter(DeepseekV3Adapter):
    model_type = "sarvam_mla"
