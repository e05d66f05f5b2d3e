"""Mellum (mellum): Qwen3-MoE's sparse block and the same router code: softmax over all experts in fp32, top-k,
renormalized only if `norm_topk_prob`, cast back to the logits' dtype. The rule is written out once, in olmoe.py.
"""

from specmd_predict.adapters.olmoe import OlmoeAdapter


class MellumAdapter(OlmoeAdapter):
    model_type = "mellum"
