"""Granite MoE with sliding-window attention (granitemoe_swa): Granite MoE Shared's modules and rule unchanged.

Its router is `GraniteMoeTopKRouter` as is (top-k logits, softmax over the k); only the attention differs.
The shared MLP sits on the decoder layer, as in granitemoeshared. The rule is written out once, in granitemoe.py.
"""

from specmd_predict.adapters.granitemoeshared import GraniteMoeSharedAdapter


class GraniteMoeSWAAdapter(GraniteMoeSharedAdapter):
    model_type = "granitemoe_swa"
