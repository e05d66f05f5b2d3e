"""A.X-K2 (axk2): DeepSeek-V3's sigmoid rule, but groups are optional and mask to 0 instead of -inf.

`AXK2TopkRouter`: scores = sigmoid(fp32 logits), choice = scores + `e_score_correction_bias`; when `n_group` is
set, groups score the sum of their two best and experts outside the `topk_group` best get choice 0.0; top-k of
the choice; weights are the unbiased scores, renormalized (+1e-20) if `norm_topk_prob`, times
`routed_scaling_factor`. Decoder layer i is an MoE layer when `mlp_layer_types[i] == "sparse"`; each MoE
block has `shared_experts` (always resident).
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class AXK2Adapter(DeepseekV3Adapter):
    model_type = "axk2"
    outside_groups = 0.0
