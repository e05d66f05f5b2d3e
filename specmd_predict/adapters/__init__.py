"""MoE adapters, one file per model family, registered by `config.model_type`.

    from specmd_predict.adapters import get_adapter
    adapter = get_adapter(model)          # raises UnsupportedModelError listing the supported types
"""

from __future__ import annotations

from torch import nn

from specmd_predict.adapters.base import MoEAdapter, UnsupportedModelError, check_identity
from specmd_predict.adapters.deepseek_v2 import DeepseekV2Adapter
from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter
from specmd_predict.adapters.ernie4_5_moe import Ernie45MoeAdapter
from specmd_predict.adapters.glm4_moe import Glm4MoeAdapter
from specmd_predict.adapters.gpt_oss import GptOssAdapter
from specmd_predict.adapters.granitemoe import GraniteMoeAdapter
from specmd_predict.adapters.hunyuan_v1_moe import HunyuanV1MoeAdapter
from specmd_predict.adapters.minimax import MiniMaxAdapter
from specmd_predict.adapters.mixtral import MixtralAdapter
from specmd_predict.adapters.olmoe import OlmoeAdapter
from specmd_predict.adapters.phimoe import PhimoeAdapter
from specmd_predict.adapters.qwen2_moe import Qwen2MoeAdapter
from specmd_predict.adapters.qwen3_moe import Qwen3MoeAdapter
from specmd_predict.adapters.qwen3_next import Qwen3NextAdapter

ADAPTERS: dict[str, type[MoEAdapter]] = {
    cls.model_type: cls
    for cls in (
        DeepseekV2Adapter,
        DeepseekV3Adapter,
        Ernie45MoeAdapter,
        Glm4MoeAdapter,
        GptOssAdapter,
        GraniteMoeAdapter,
        HunyuanV1MoeAdapter,
        MiniMaxAdapter,
        MixtralAdapter,
        OlmoeAdapter,
        PhimoeAdapter,
        Qwen2MoeAdapter,
        Qwen3MoeAdapter,
        Qwen3NextAdapter,
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
