"""FlexOlmo (allenai/FlexOlmo-7x7B-1T): OLMoE's rule, softmax over all experts, then top-k; renormalized only if
`norm_topk_prob`. Every decoder layer is an MoE layer; no shared experts.

The routing rule is written out once, in olmoe.py.
"""

from specmd_predict.adapters.olmoe import OlmoeAdapter


class FlexOlmoAdapter(OlmoeAdapter):
    model_type = "flex_olmo"
