"""Qwen4-Exp text model (qwen4_exp_text): Qwen3-Next's router and MoE block unchanged (`Qwen4ExpTextTopKRouter:
pass`): softmax, top-k, renormalized only if `norm_topk_prob`; one gated `shared_expert` (always resident).
The rule is written out once, in olmoe.py.
"""

from specmd_predict.adapters.qwen3_next import Qwen3NextAdapter


class Qwen4ExpAdapter(Qwen3NextAdapter):
    model_type = "qwen4_exp_text"
