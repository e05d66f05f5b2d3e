"""MoE adapters, one file per model family, registered by the text config's `model_type`.

    from specmd_predict.adapters import get_adapter
    adapter = get_adapter(model)          # raises UnsupportedModelError listing the supported types

Routing rules by kind (each file spells its own out): softmax then top-k (olmoe, flex_olmo, mixtral, minimax,
qwen2_moe, qwen3_moe, qwen3_next, qwen3_5_moe_text, qwen3_vl_moe_text, jamba, hunyuan_v1_moe, deepseek_v2); top-k
logits then softmax/sigmoid over the k (gpt_oss, granitemoe*, cohere2_moe, llama4_text); sigmoid with a correction
bias, grouped top-k and scaling (deepseek_v3, deepseek_v32, glm4_moe, glm4v_moe_text, glm4_moe_lite, dots1,
exaone_moe, solar_open, nemotron_h, kimi_linear, mimo_v2_flash, bailing_hybrid); sigmoid with a bias on the block
(minimax_m2, lfm2_moe, afmoe); softmax with a bias (ernie4_5_moe); softmax with groups and no bias (mistral4);
PhiMoE's sparsemixer (phimoe).
"""

from __future__ import annotations

from torch import nn

from specmd_predict.adapters.afmoe import AfmoeAdapter
from specmd_predict.adapters.bailing_hybrid import BailingHybridAdapter
from specmd_predict.adapters.base import MoEAdapter, UnsupportedModelError, check_identity
from specmd_predict.adapters.cohere2_moe import Cohere2MoeAdapter
from specmd_predict.adapters.deepseek_v2 import DeepseekV2Adapter
from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter
from specmd_predict.adapters.deepseek_v32 import DeepseekV32Adapter
from specmd_predict.adapters.dots1 import Dots1Adapter
from specmd_predict.adapters.ernie4_5_moe import Ernie45MoeAdapter
from specmd_predict.adapters.exaone_moe import ExaoneMoeAdapter
from specmd_predict.adapters.flex_olmo import FlexOlmoAdapter
from specmd_predict.adapters.glm4_moe import Glm4MoeAdapter
from specmd_predict.adapters.glm4_moe_lite import Glm4MoeLiteAdapter
from specmd_predict.adapters.glm4v_moe import Glm4vMoeAdapter
from specmd_predict.adapters.gpt_oss import GptOssAdapter
from specmd_predict.adapters.granitemoe import GraniteMoeAdapter
from specmd_predict.adapters.granitemoehybrid import GraniteMoeHybridAdapter
from specmd_predict.adapters.granitemoeshared import GraniteMoeSharedAdapter
from specmd_predict.adapters.hunyuan_v1_moe import HunyuanV1MoeAdapter
from specmd_predict.adapters.jamba import JambaAdapter
from specmd_predict.adapters.kimi_linear import KimiLinearAdapter
from specmd_predict.adapters.lfm2_moe import Lfm2MoeAdapter
from specmd_predict.adapters.llama4 import Llama4Adapter
from specmd_predict.adapters.mimo_v2_flash import MiMoV2FlashAdapter
from specmd_predict.adapters.minimax import MiniMaxAdapter
from specmd_predict.adapters.minimax_m2 import MiniMaxM2Adapter
from specmd_predict.adapters.mistral4 import Mistral4Adapter
from specmd_predict.adapters.mixtral import MixtralAdapter
from specmd_predict.adapters.nemotron_h import NemotronHAdapter
from specmd_predict.adapters.olmoe import OlmoeAdapter
from specmd_predict.adapters.phimoe import PhimoeAdapter
from specmd_predict.adapters.qwen2_moe import Qwen2MoeAdapter
from specmd_predict.adapters.qwen3_5_moe import Qwen35MoeAdapter
from specmd_predict.adapters.qwen3_moe import Qwen3MoeAdapter
from specmd_predict.adapters.qwen3_next import Qwen3NextAdapter
from specmd_predict.adapters.qwen3_vl_moe import Qwen3VLMoeAdapter
from specmd_predict.adapters.solar_open import SolarOpenAdapter

ADAPTERS: dict[str, type[MoEAdapter]] = {
    cls.model_type: cls
    for cls in (
        AfmoeAdapter,
        BailingHybridAdapter,
        Cohere2MoeAdapter,
        DeepseekV2Adapter,
        DeepseekV32Adapter,
        DeepseekV3Adapter,
        Dots1Adapter,
        Ernie45MoeAdapter,
        ExaoneMoeAdapter,
        FlexOlmoAdapter,
        Glm4MoeAdapter,
        Glm4MoeLiteAdapter,
        Glm4vMoeAdapter,
        GptOssAdapter,
        GraniteMoeAdapter,
        GraniteMoeHybridAdapter,
        GraniteMoeSharedAdapter,
        HunyuanV1MoeAdapter,
        JambaAdapter,
        KimiLinearAdapter,
        Lfm2MoeAdapter,
        Llama4Adapter,
        MiMoV2FlashAdapter,
        MiniMaxAdapter,
        MiniMaxM2Adapter,
        Mistral4Adapter,
        MixtralAdapter,
        NemotronHAdapter,
        OlmoeAdapter,
        PhimoeAdapter,
        Qwen2MoeAdapter,
        Qwen35MoeAdapter,
        Qwen3MoeAdapter,
        Qwen3NextAdapter,
        Qwen3VLMoeAdapter,
        SolarOpenAdapter,
    )
}


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def get_adapter(model: nn.Module) -> MoEAdapter:
    """The adapter for `model`'s family; a clear error for unsupported or non-MoE models."""
    config = getattr(model, "config", None)
    model_type = getattr(config.get_text_config(), "model_type", None) if config is not None else None
    if model_type not in ADAPTERS:
        raise UnsupportedModelError(
            f"unsupported model type {model_type!r}: specmd-predict supports MoE models of type "
            f"{', '.join(supported_model_types())}"
        )
    return ADAPTERS[model_type](model)


__all__ = ["ADAPTERS", "MoEAdapter", "UnsupportedModelError", "check_identity", "get_adapter", "supported_model_types"]
