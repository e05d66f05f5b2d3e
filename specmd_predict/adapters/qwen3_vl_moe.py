"""Qwen3-VL-MoE (Qwen/Qwen3-VL-30B-A3B; text model `qwen3_vl_moe_text`): softmax, top-k, always renormalized.

No shared experts. Layers in `mlp_only_layers`, or off the `decoder_sparse_step` grid, are dense MLPs. The
vision tower does not route. Registered under the text config's type, which is what `get_adapter` reads for
the image-text checkpoint (loaded with AutoModelForImageTextToText).

The routing rule is written out once, in olmoe.py.
"""

from specmd_predict.adapters.olmoe import OlmoeAdapter


class Qwen3VLMoeAdapter(OlmoeAdapter):
    model_type = "qwen3_vl_moe_text"

    @property
    def renormalize(self) -> bool:
        return True  # unlike OLMoE, regardless of config
