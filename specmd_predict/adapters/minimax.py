"""MiniMax-Text-01 (MiniMaxAI/MiniMax-Text-01): Mixtral's rule: fp32 softmax over all experts, top-k, renormalized.

The top-k weights stay fp32 (the router never casts back). `router_jitter_noise` acts only in training.
The hybrid lightning/full attention does not touch routing; every decoder layer is an MoE layer.

The routing rule is written out once, in mixtral.py.
"""

from specmd_predict.adapters.mixtral import MixtralAdapter


class MiniMaxAdapter(MixtralAdapter):
    model_type = "minimax"
