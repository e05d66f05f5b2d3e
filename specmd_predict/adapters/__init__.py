"""MoE adapters, one file per model family, registered by the text config's `model_type`.

    from specmd_predict.adapters import get_adapter
    adapter = get_adapter(model)          # raises UnsupportedModelError listing the supported types

Routing rules by kind (each file spells its own out): softmax then top-k (olmoe, flex_olmo, mixtral, minimax,
qwen2_moe, qwen3_moe, qwen3_next, qwen3_5_moe_text, qwen3_vl_moe_text, qwen4_exp_text, mellum, lara_mini, jamba,
hunyuan_v1_moe, deepseek_v2, dbrx); top-k logits then softmax/sigmoid over the k (gpt_oss, granitemoe*, cohere2_moe,
llama4_text, aria_text, jetmoe); sigmoid with a correction bias, grouped top-k and scaling (deepseek_v3, deepseek_v32,
glm4_moe, glm4v_moe_text, glm4_moe_lite, glm_moe_dsa, dots1, dots3_note_text, exaone_moe, solar_open, nemotron_h,
kimi_linear, mimo_v2_flash, bailing_hybrid, axk1, axk2, beam, hy_v4, sarvam_moe, sarvam_mla); sigmoid with a
bias on the block or router (minimax_m2, minimax_m3_vl_text, hy_v3, lfm2_moe, afmoe, laguna, inkling2_text,
inkling2_loop_text); sigmoid without a
bias (flint); biased logits, sigmoid weights (kolibri1); softmax with a bias (ernie4_5_moe); softmax with groups
and no bias (mistral4); PhiMoE's sparsemixer (phimoe); an RMS-normed, per-expert-scaled softmax beside a dense MLP
(gemma4_text); sqrt-softplus with a bias, and hash-routed first layers whose experts follow from the token id
(deepseek_v4); sigmoid with a bias whose weights share one normalization with the shared experts' (inkling_text);
an MLP router that also reads the previous router's state, with a skip class (zaya). Families transformers ships
without an adapter are in EXCLUDED_MODEL_TYPES with the reason, which get_adapter's error gives.
"""

from __future__ import annotations

from torch import nn

from specmd_predict.adapters.afmoe import AfmoeAdapter
from specmd_predict.adapters.aria import AriaTextAdapter
from specmd_predict.adapters.axk1 import AXK1Adapter
from specmd_predict.adapters.axk2 import AXK2Adapter
from specmd_predict.adapters.bailing_hybrid import BailingHybridAdapter
from specmd_predict.adapters.base import MoEAdapter, UnsupportedModelError, check_identity
from specmd_predict.adapters.beam import BeamAdapter
from specmd_predict.adapters.cohere2_moe import Cohere2MoeAdapter
from specmd_predict.adapters.dbrx import DbrxAdapter
from specmd_predict.adapters.deepseek_v2 import DeepseekV2Adapter
from specmd_predict.adapters.deepseek_v3 import DeepseekV3Adapter
from specmd_predict.adapters.deepseek_v4 import DeepseekV4Adapter
from specmd_predict.adapters.deepseek_v32 import DeepseekV32Adapter
from specmd_predict.adapters.dots1 import Dots1Adapter
from specmd_predict.adapters.dots3_note import Dots3NoteAdapter
from specmd_predict.adapters.ernie4_5_moe import Ernie45MoeAdapter
from specmd_predict.adapters.exaone_moe import ExaoneMoeAdapter
from specmd_predict.adapters.flex_olmo import FlexOlmoAdapter
from specmd_predict.adapters.flint import FlintAdapter
from specmd_predict.adapters.gemma4 import Gemma4Adapter
from specmd_predict.adapters.glm4_moe import Glm4MoeAdapter
from specmd_predict.adapters.glm4_moe_lite import Glm4MoeLiteAdapter
from specmd_predict.adapters.glm4v_moe import Glm4vMoeAdapter
from specmd_predict.adapters.glm_moe_dsa import GlmMoeDsaAdapter
from specmd_predict.adapters.gpt_oss import GptOssAdapter
from specmd_predict.adapters.granitemoe import GraniteMoeAdapter
from specmd_predict.adapters.granitemoe_swa import GraniteMoeSWAAdapter
from specmd_predict.adapters.granitemoehybrid import GraniteMoeHybridAdapter
from specmd_predict.adapters.granitemoeshared import GraniteMoeSharedAdapter
from specmd_predict.adapters.hunyuan_v1_moe import HunyuanV1MoeAdapter
from specmd_predict.adapters.hy_v3 import HYV3Adapter
from specmd_predict.adapters.hy_v4 import HYV4Adapter
from specmd_predict.adapters.inkling import InklingAdapter
from specmd_predict.adapters.inkling2 import Inkling2Adapter
from specmd_predict.adapters.inkling2_loop import Inkling2LoopAdapter
from specmd_predict.adapters.jamba import JambaAdapter
from specmd_predict.adapters.jetmoe import JetMoeAdapter
from specmd_predict.adapters.kimi_linear import KimiLinearAdapter
from specmd_predict.adapters.kolibri1 import Kolibri1Adapter
from specmd_predict.adapters.laguna import LagunaAdapter
from specmd_predict.adapters.lara_mini import LaraMiniAdapter
from specmd_predict.adapters.lfm2_moe import Lfm2MoeAdapter
from specmd_predict.adapters.llama4 import Llama4Adapter
from specmd_predict.adapters.mellum import MellumAdapter
from specmd_predict.adapters.mimo_v2_flash import MiMoV2FlashAdapter
from specmd_predict.adapters.minimax import MiniMaxAdapter
from specmd_predict.adapters.minimax_m2 import MiniMaxM2Adapter
from specmd_predict.adapters.minimax_m3_vl import MiniMaxM3Adapter
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
from specmd_predict.adapters.qwen4_exp import Qwen4ExpAdapter
from specmd_predict.adapters.sarvam_mla import SarvamMlaAdapter
from specmd_predict.adapters.sarvam_moe import SarvamMoeAdapter
from specmd_predict.adapters.solar_open import SolarOpenAdapter
from specmd_predict.adapters.zaya import ZayaAdapter

ADAPTERS: dict[str, type[MoEAdapter]] = {
    cls.model_type: cls
    for cls in (
        AfmoeAdapter,
        AriaTextAdapter,
        AXK1Adapter,
        AXK2Adapter,
        BailingHybridAdapter,
        BeamAdapter,
        Cohere2MoeAdapter,
        DbrxAdapter,
        DeepseekV2Adapter,
        DeepseekV32Adapter,
        DeepseekV3Adapter,
        DeepseekV4Adapter,
        Dots1Adapter,
        Dots3NoteAdapter,
        Ernie45MoeAdapter,
        ExaoneMoeAdapter,
        FlexOlmoAdapter,
        FlintAdapter,
        Gemma4Adapter,
        Glm4MoeAdapter,
        Glm4MoeLiteAdapter,
        Glm4vMoeAdapter,
        GlmMoeDsaAdapter,
        GptOssAdapter,
        GraniteMoeAdapter,
        GraniteMoeHybridAdapter,
        GraniteMoeSharedAdapter,
        GraniteMoeSWAAdapter,
        HunyuanV1MoeAdapter,
        HYV3Adapter,
        HYV4Adapter,
        InklingAdapter,
        Inkling2Adapter,
        Inkling2LoopAdapter,
        JambaAdapter,
        JetMoeAdapter,
        KimiLinearAdapter,
        Kolibri1Adapter,
        LagunaAdapter,
        LaraMiniAdapter,
        Lfm2MoeAdapter,
        Llama4Adapter,
        MellumAdapter,
        MiMoV2FlashAdapter,
        MiniMaxAdapter,
        MiniMaxM2Adapter,
        MiniMaxM3Adapter,
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
        Qwen4ExpAdapter,
        SarvamMlaAdapter,
        SarvamMoeAdapter,
        SolarOpenAdapter,
        ZayaAdapter,
    )
}


# Routed-MoE causal-LM families of transformers that have no adapter, and why (tests/specmd_predict/
# test_families.py checks that every such family is either in ADAPTERS or here; get_adapter gives the reason).
EXCLUDED_MODEL_TYPES: dict[str, str] = {
    "doge": "its routed 'experts' (CDMoE, only with is_moe=True) are single rows of two embedding tables, "
    "num_experts=16384 vectors of hidden_size values picked 64 per token by product-key retrieval, not expert MLPs "
    "moved as weight blocks; and its router reshapes the logits of all tokens together (view(2, tokens, -1)), so in "
    "a whole-sequence forward a token's experts depend on the other tokens and a harvest would not see decode routing",
    "longcat_flash": "its top-k also picks among zero_expert_num identity 'zero experts' (ids n_routed_experts and "
    "up, no weights), so a token uses a varying number of real experts; the project's routing (k expert ids per token, "
    "each a weight block), harvests, training targets and the cache have no 'no expert' id to give them yet",
}


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def get_adapter(model: nn.Module) -> MoEAdapter:
    """The adapter for `model`'s family; a clear error for unsupported or non-MoE models."""
    config = getattr(model, "config", None)
    model_type = getattr(config.get_text_config(), "model_type", None) if config is not None else None
    if model_type in EXCLUDED_MODEL_TYPES:
        raise UnsupportedModelError(f"model type {model_type!r} is not supported: {EXCLUDED_MODEL_TYPES[model_type]}")
    if model_type not in ADAPTERS:
        raise UnsupportedModelError(
            f"unsupported model type {model_type!r}: specmd-predict supports MoE models of type "
            f"{', '.join(supported_model_types())}"
        )
    return ADAPTERS[model_type](model)


__all__ = [
    "ADAPTERS",
    "EXCLUDED_MODEL_TYPES",
    "MoEAdapter",
    "UnsupportedModelError",
    "check_identity",
    "get_adapter",
    "supported_model_types",
]
