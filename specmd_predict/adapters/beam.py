"""Beam (beam): DeepSeek-V3's grouped, biased sigmoid rule with no weight scaling in the router.

`BeamTopKRouter` copies DeepSeek-V3's router (sigmoid scores, + `e_score_correction_bias`, groups scored by their
two best, experts outside the `topk_group` best groups at -inf, renormalized with +1e-20 if `norm_topk_prob`)
but deletes its `routed_scaling_factor`: Beam's MoE block scales its output instead, so the weights are not
scaled. No shared experts; decoder layer i is an MoE layer when `mlp_layer_types[i] == "sparse"`.
"""

from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter


class BeamAdapter(DeepseekV3Adapter):
    model_type = "beam"
    shared_experts_attr = None

    @property
    def weight_scale(self) -> float:
        return 1.0
