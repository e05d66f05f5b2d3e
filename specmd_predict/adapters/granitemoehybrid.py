"""Granite 4 hybrid (ibm-granite/granite-4.0-h-tiny, granitemoehybrid): top-k logits, softmax over the k.

The weights are a softmax over only the chosen k fp32 logits (they sum to one), cast back to the hidden
states' dtype. Decoder layers (Mamba or attention) hold a `block_sparse_moe` unless `num_local_experts` is 0.
The shared MLP (`shared_mlp`) every token uses sits on the decoder layer, not on the MoE block, so
`shared_experts(l)` reads it there.

The routing rule is written out once, in granitemoe.py.
"""

from specmd_predict.adapters.granitemoeshared import GraniteMoeSharedAdapter


class GraniteMoeHybridAdapter(GraniteMoeSharedAdapter):
    model_type = "granitemoehybrid"
