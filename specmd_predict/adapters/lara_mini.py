"""Lara-mini (lara_mini): fp32 softmax over all experts, top-k, renormalized only if `norm_topk_prob`, cast to
the hidden states' dtype: OLMoE's rule, written out once in olmoe.py. Each MoE block (Flint's) adds its
`shared_expert` in full for every token (always resident).
"""

from specmd_predict.adapters.olmoe import OlmoeAdapter


class LaraMiniAdapter(OlmoeAdapter):
    model_type = "lara_mini"
    shared_experts_attr = "shared_expert"
