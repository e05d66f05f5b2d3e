"""Every adapter reproduces its family's own routing, through the same from_pretrained path a hub id takes.

Run: pytest tests/specmd_predict/test_adapters.py
Each FAMILY_CONFIGS entry is a tiny random model, saved once per module and loaded in fp32 and bf16 (CPU,
single-threaded, ~10 s for the file); variants exercise each branch of a family's rule (renormalization
on/off, group limits and correction biases, dense layers mixed with MoE layers, PhiMoE's jitter band).
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AfmoeConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    BailingHybridConfig,
    Cohere2MoeConfig,
    DeepseekV2Config,
    DeepseekV3Config,
    DeepseekV32Config,
    Dots1Config,
    Ernie4_5_MoeConfig,
    ExaoneMoeConfig,
    FlexOlmoConfig,
    Glm4MoeConfig,
    Glm4MoeLiteConfig,
    Glm4vMoeConfig,
    GptOssConfig,
    GraniteMoeConfig,
    GraniteMoeHybridConfig,
    GraniteMoeSharedConfig,
    HunYuanMoEV1Config,
    JambaConfig,
    KimiLinearConfig,
    Lfm2MoeConfig,
    Llama4TextConfig,
    LlamaConfig,
    MiMoV2FlashConfig,
    MiniMaxConfig,
    MiniMaxM2Config,
    Mistral4Config,
    Mistral4ForCausalLM,
    MixtralConfig,
    NemotronHConfig,
    OlmoeConfig,
    PhimoeConfig,
    Qwen2MoeConfig,
    Qwen3_5MoeTextConfig,
    Qwen3MoeConfig,
    Qwen3NextConfig,
    Qwen3VLMoeConfig,
    SolarOpenConfig,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from specmd_predict.adapters import UnsupportedModelError, get_adapter, supported_model_types
from specmd_predict.capture import record_routing
from tests.tiny_models import randomize_routing_buffers, tiny_config

TINY = dict(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)
D, I = 32, 16  # hidden size, expert intermediate size of every config below
MLA = dict(kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8)
QWEN = dict(head_dim=8, intermediate_size=24, moe_intermediate_size=I)
DEEPSEEK = dict(**MLA, intermediate_size=24, moe_intermediate_size=I, n_shared_experts=1)

FAMILY_CONFIGS = {
    "olmoe": lambda: OlmoeConfig(**TINY, intermediate_size=I, num_experts=8, num_experts_per_tok=2),
    "olmoe-renorm": lambda: OlmoeConfig(
        **TINY, intermediate_size=I, num_experts=8, num_experts_per_tok=3, norm_topk_prob=True
    ),
    "mixtral": lambda: MixtralConfig(**TINY, intermediate_size=I, num_local_experts=8, num_experts_per_tok=2),
    # decoder layer 1 is a dense MLP
    "qwen2_moe-dense-mix": lambda: Qwen2MoeConfig(
        **TINY, **QWEN, shared_expert_intermediate_size=I, num_experts=8, num_experts_per_tok=2, mlp_only_layers=[1]
    ),
    "qwen2_moe-renorm": lambda: Qwen2MoeConfig(
        **TINY, **QWEN, shared_expert_intermediate_size=I, num_experts=8, num_experts_per_tok=3, norm_topk_prob=True
    ),
    "qwen3_moe": lambda: Qwen3MoeConfig(**TINY, **QWEN, num_experts=8, num_experts_per_tok=2),
    # MoE on every second decoder layer (1 and 3), top-k renormalized
    "qwen3_moe-sparse-step-renorm": lambda: Qwen3MoeConfig(
        **{**TINY, "num_hidden_layers": 4},
        **QWEN,
        num_experts=8,
        num_experts_per_tok=3,
        norm_topk_prob=True,
        decoder_sparse_step=2,
    ),
    "deepseek_v2-greedy-dense-mix": lambda: DeepseekV2Config(
        **TINY,
        **DEEPSEEK,
        n_routed_experts=8,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        routed_scaling_factor=2.0,
    ),
    "deepseek_v2-group-limited": lambda: DeepseekV2Config(
        **TINY,
        **DEEPSEEK,
        n_routed_experts=8,
        num_experts_per_tok=3,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,
        routed_scaling_factor=16.0,
    ),
    # 4 groups of 4 experts, 2 groups kept; save_tiny gives e_score_correction_bias random values
    "deepseek_v3-groups-bias": lambda: DeepseekV3Config(
        **TINY,
        **DEEPSEEK,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
    ),
    "deepseek_v3-one-group-no-norm": lambda: DeepseekV3Config(
        **TINY,
        **DEEPSEEK,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        first_k_dense_replace=0,
        norm_topk_prob=False,
        routed_scaling_factor=1.5,
    ),
    "gpt_oss": lambda: GptOssConfig(
        **TINY, head_dim=8, intermediate_size=I, num_local_experts=8, num_experts_per_tok=3
    ),
    "phimoe": lambda: PhimoeConfig(**TINY, intermediate_size=I, num_local_experts=8, num_experts_per_tok=2),
    # a wide jitter band: more experts share each softmax, so the weights move away from 1
    "phimoe-wide-band": lambda: PhimoeConfig(
        **TINY, intermediate_size=I, num_local_experts=8, num_experts_per_tok=2, router_jitter_noise=0.4
    ),
    # extra families
    "qwen3_next-dense-mix": lambda: Qwen3NextConfig(
        **{**TINY, "num_hidden_layers": 4},
        **QWEN,
        shared_expert_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        mlp_only_layers=[2],
        layer_types=["linear_attention", "full_attention"] * 2,
        linear_num_value_heads=4,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
    ),
    "granitemoe": lambda: GraniteMoeConfig(**TINY, intermediate_size=I, num_local_experts=8, num_experts_per_tok=2),
    # MoE on decoder layers 1..2 only; save_tiny gives the correction bias random values
    "ernie4_5_moe-dense-mix-bias": lambda: Ernie4_5_MoeConfig(
        **{**TINY, "num_hidden_layers": 4},
        intermediate_size=24,
        moe_intermediate_size=I,
        moe_num_experts=8,
        moe_k=3,
        moe_num_shared_experts=1,
        moe_layer_start_index=1,
        moe_layer_end_index=2,
    ),
    "glm4_moe-groups-bias": lambda: Glm4MoeConfig(
        **TINY,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
    ),
    "hunyuan_v1_moe": lambda: HunYuanMoEV1Config(**TINY, head_dim=8, intermediate_size=I, num_experts=8, moe_topk=2),
    "minimax": lambda: MiniMaxConfig(
        **TINY,
        head_dim=8,
        intermediate_size=I,
        num_local_experts=8,
        num_experts_per_tok=2,
        block_size=4,
        layer_types=["linear_attention", "full_attention", "linear_attention"],
    ),
    "dots1-dense-mix": lambda: Dots1Config(
        **TINY,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=2,
        topk_group=1,
        first_k_dense_replace=1,
        norm_topk_prob=True,
    ),
    "glm4_moe_lite-dense-mix": lambda: Glm4MoeLiteConfig(
        **TINY,
        **MLA,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        mlp_layer_types=["dense", "sparse", "sparse"],
    ),
    "exaone_moe-dense-mix": lambda: ExaoneMoeConfig(
        **TINY,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        num_shared_experts=1,
        first_k_dense_replace=1,
        n_group=2,
        topk_group=1,
    ),
    "solar_open": lambda: SolarOpenConfig(
        **TINY,
        head_dim=8,
        moe_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        routed_scaling_factor=2.0,
    ),
    "flex_olmo": lambda: FlexOlmoConfig(
        **TINY, intermediate_size=I, num_experts=8, num_experts_per_tok=2, pad_token_id=0, eos_token_id=1
    ),
    "cohere2_moe-softmax": lambda: Cohere2MoeConfig(
        **TINY,
        head_dim=8,
        intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        num_shared_experts=1,
        mlp_layer_types=["dense", "sparse", "sparse"],
        prefix_dense_intermediate_size=24,
    ),
    "cohere2_moe-sigmoid-no-norm": lambda: Cohere2MoeConfig(
        **TINY,
        head_dim=8,
        intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=3,
        num_shared_experts=0,
        expert_selection_fn="sigmoid",
        norm_topk_prob=False,
    ),
    "lfm2_moe-dense-mix-bias": lambda: Lfm2MoeConfig(
        **TINY,
        intermediate_size=24,
        moe_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        num_dense_layers=1,
        routed_scaling_factor=1.5,
        layer_types=["conv", "full_attention", "conv"],
    ),
    "lfm2_moe-no-bias": lambda: Lfm2MoeConfig(
        **TINY,
        intermediate_size=24,
        moe_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=3,
        num_dense_layers=0,
        use_expert_bias=False,
        norm_topk_prob=False,
        layer_types=["conv", "full_attention", "conv"],
    ),
    "minimax_m2-bias": lambda: MiniMaxM2Config(
        **TINY, head_dim=8, intermediate_size=I, num_local_experts=8, num_experts_per_tok=2
    ),
    "qwen3_5_moe_text": lambda: Qwen3_5MoeTextConfig(
        **{**TINY, "num_hidden_layers": 2},
        head_dim=8,
        moe_intermediate_size=I,
        shared_expert_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        layer_types=["linear_attention", "full_attention"],
        linear_num_value_heads=4,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
    ),
    "deepseek_v32-dense-mix": lambda: DeepseekV32Config(
        **{**TINY, "num_key_value_heads": 4},
        **{**MLA, "q_lora_rank": 8},
        head_dim=4,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=2,
        topk_group=1,
        mlp_layer_types=["dense", "sparse", "sparse"],
        index_topk=4,
        index_head_dim=8,
        index_n_heads=2,
    ),
    # Mamba / MoE / attention / MoE mixers; torch Mamba path (no kernels on CPU)
    "nemotron_h-hybrid": lambda: NemotronHConfig(
        **{**TINY, "num_hidden_layers": 4},
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        moe_shared_expert_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=2,
        routed_scaling_factor=2.0,
        layers_block_type=["mamba", "moe", "attention", "moe"],
        mamba_num_heads=4,
        mamba_head_dim=8,
        ssm_state_size=8,
        n_groups=1,
        chunk_size=4,
        use_mamba_kernels=False,
    ),
    "llama4_text-interleaved": lambda: Llama4TextConfig(
        **TINY,
        head_dim=8,
        intermediate_size=I,
        intermediate_size_mlp=24,
        num_local_experts=8,
        num_experts_per_tok=2,
        moe_layers=[0, 2],
        attention_chunk_size=None,
    ),
    "jamba-hybrid": lambda: JambaConfig(
        **{**TINY, "num_hidden_layers": 4},
        intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        expert_layer_period=2,
        expert_layer_offset=1,
        attn_layer_period=2,
        attn_layer_offset=0,
        use_mamba_kernels=False,
        mamba_d_state=4,
    ),
    "granitemoeshared": lambda: GraniteMoeSharedConfig(
        **TINY, intermediate_size=I, num_local_experts=8, num_experts_per_tok=2, shared_intermediate_size=24
    ),
    "granitemoehybrid": lambda: GraniteMoeHybridConfig(
        **TINY,
        intermediate_size=I,
        num_local_experts=8,
        num_experts_per_tok=2,
        shared_intermediate_size=24,
        layer_types=["mamba", "attention", "mamba"],
        mamba_n_heads=4,
        mamba_d_head=16,
        mamba_d_state=8,
        mamba_chunk_size=4,
    ),
    "afmoe-dense-mix-bias": lambda: AfmoeConfig(
        **TINY,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        num_shared_experts=1,
        num_dense_layers=1,
        route_scale=2.0,
        global_attn_every_n_layers=2,
        sliding_window=4,
    ),
    "kimi_linear-hybrid": lambda: KimiLinearConfig(
        **{**TINY, "num_key_value_heads": 4},
        **MLA,
        intermediate_size=24,
        moe_intermediate_size=I,
        num_local_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=2,
        topk_group=1,
        mlp_layer_types=["dense", "sparse", "sparse"],
        layer_types=["linear_attention", "full_attention", "linear_attention"],
        linear_head_dim=8,
        linear_num_heads=4,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "mimo_v2_flash": lambda: MiMoV2FlashConfig(
        **TINY,
        head_dim=8,
        v_head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        mlp_layer_types=["dense", "sparse", "sparse"],
        sliding_window=4,
    ),
    "bailing_hybrid": lambda: BailingHybridConfig(
        **{**TINY, "num_key_value_heads": 4},
        **MLA,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        num_local_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=2,
        topk_group=1,
        mlp_layer_types=["dense", "sparse", "sparse"],
        layer_group_size=3,
        pad_token_id=0,
        eos_token_id=1,
    ),
    # 4 groups of 2 experts, 2 kept, over softmax scores (no bias)
    "mistral4-groups": lambda: Mistral4Config(
        **{**TINY, "num_key_value_heads": 4},
        **MLA,
        head_dim=4,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=3,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        routed_scaling_factor=1.5,
        norm_topk_prob=True,
    ),
    # the image-text checkpoint, text tokens only
    "qwen3_vl_moe-dense-mix": lambda: Qwen3VLMoeConfig(
        text_config=dict(
            **TINY,
            head_dim=8,
            intermediate_size=24,
            moe_intermediate_size=I,
            num_experts=8,
            num_experts_per_tok=2,
            mlp_only_layers=[1],
            rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [1, 1, 2]},
        ),
        vision_config=dict(
            depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32, deepstack_visual_indexes=[]
        ),  # fmt: skip
    ),
    "glm4v_moe-groups-bias": lambda: Glm4vMoeConfig(
        text_config=dict(
            **TINY,
            head_dim=16,
            intermediate_size=24,
            moe_intermediate_size=I,
            n_routed_experts=16,
            num_experts_per_tok=3,
            n_shared_experts=1,
            n_group=4,
            topk_group=2,
            first_k_dense_replace=1,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e4,
                "partial_rotary_factor": 0.5,
                "mrope_section": [1, 1, 2],
            },
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32),
    ),
    # families transformers added after the ones above; same shapes as the family whose modules they reuse
    "granitemoe_swa": lambda: config_of(
        "granitemoe_swa",
        **TINY,
        intermediate_size=I,
        num_local_experts=8,
        num_experts_per_tok=2,
        shared_intermediate_size=24,
    ),
    "axk1-groups-bias": lambda: config_of(
        "axk1",
        **{**TINY, "num_key_value_heads": 4},
        **{**MLA, "q_lora_rank": 8},
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        mlp_layer_types=["dense", "sparse", "sparse"],
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
    ),
    "dots3_note_text-groups-bias": lambda: config_of(
        "dots3_note_text",
        **{**TINY, "num_key_value_heads": 4},
        **{**MLA, "q_lora_rank": 8},
        head_dim=4,
        intermediate_size=24,
        moe_intermediate_size=I,
        shared_experts_intermediate_size=I,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        mlp_layer_types=["dense", "sparse", "sparse"],
        index_topk=4,
        index_head_dim=8,
        index_n_heads=2,
        pad_token_id=0,
    ),
    "glm_moe_dsa-groups-bias": lambda: config_of(
        "glm_moe_dsa",
        **{**TINY, "num_key_value_heads": 4},
        **{**MLA, "q_lora_rank": 8},
        head_dim=4,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        mlp_layer_types=["dense", "sparse", "sparse"],
        index_topk=4,
        index_head_dim=8,
        index_n_heads=2,
    ),
    "hy_v4-groups-bias": lambda: config_of(
        "hy_v4",
        **{**TINY, "num_key_value_heads": 4},
        **{**MLA, "q_lora_rank": 8},
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        mlp_layer_types=["dense", "sparse", "sparse"],
        pad_token_id=0,
    ),
    "sarvam_moe-groups-bias": lambda: config_of(
        "sarvam_moe",
        **TINY,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
    ),
    "sarvam_mla-groups-bias": lambda: config_of(
        "sarvam_mla",
        **TINY,
        **DEEPSEEK,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
    ),
    "mellum-renorm": lambda: config_of(
        "mellum", **TINY, **QWEN, num_experts=8, num_experts_per_tok=3, norm_topk_prob=True
    ),
    "qwen4_exp_text": lambda: config_of(
        "qwen4_exp_text",
        **TINY,
        **QWEN,
        shared_expert_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        layer_types=["linear_attention", "indexed_attention", "linear_attention"],
        linear_num_value_heads=4,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        indexer_n_heads=2,
        indexer_kv_heads=1,
        indexer_head_dim=8,
        indexer_budget=8,
        indexer_compress_ratio=2,
    ),
    "lara_mini": lambda: config_of(
        "lara_mini",
        **TINY,
        **QWEN,
        shared_expert_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        layer_types=["linear_attention", "full_attention", "full_attention"],
        linear_num_value_heads=4,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
    ),
    "beam-groups-bias": lambda: config_of(
        "beam",
        **TINY,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        num_experts=16,
        num_experts_per_tok=3,
        n_group=4,
        topk_group=2,
        routed_scaling_factor=2.5,
        mlp_layer_types=["dense", "sparse", "sparse"],
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        sliding_window=4,
    ),
    "axk2-groups-bias": lambda: config_of(
        "axk2",
        **{**TINY, "num_key_value_heads": 4},
        **{**MLA, "q_lora_rank": 8},
        head_dim=4,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        mlp_layer_types=["dense", "sparse", "sparse"],
        index_topk=4,
        index_head_dim=8,
        index_n_heads=2,
        gated_norm_rank=4,
        qk_head_dim=8,
    ),
    "axk2-no-groups-bias": lambda: config_of(
        "axk2",
        **{**TINY, "num_key_value_heads": 4},
        **{**MLA, "q_lora_rank": 8},
        head_dim=4,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        norm_topk_prob=False,
        mlp_layer_types=["dense", "sparse", "sparse"],
        index_topk=4,
        index_head_dim=8,
        index_n_heads=2,
        gated_norm_rank=4,
        qk_head_dim=8,
    ),
    "hy_v3-bias": lambda: config_of(
        "hy_v3",
        **TINY,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        num_shared_experts=1,
        mlp_layer_types=["dense", "sparse", "sparse"],
    ),
    "minimax_m3_vl_text-bias": lambda: config_of(
        "minimax_m3_vl_text",
        **TINY,
        head_dim=8,
        intermediate_size=I,
        num_local_experts=8,
        num_experts_per_tok=2,
        dense_intermediate_size=24,
        shared_intermediate_size=I,
        rotary_dim=4,
        mlp_layer_types=["dense", "sparse", "sparse"],
        layer_types=["full_attention"] * 3,
    ),
    "laguna-softcap-bias": lambda: config_of(
        "laguna",
        **TINY,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        shared_expert_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=2,
        moe_router_logit_softcapping=0.5,
        moe_routed_scaling_factor=2.0,
        mlp_layer_types=["dense", "sparse", "sparse"],
        num_attention_heads_per_layer=[4, 4, 4],
        layer_types=["full_attention", "sliding_attention", "full_attention"],
        sliding_window=4,
    ),
    "flint-renorm": lambda: config_of(
        "flint",
        **TINY,
        head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        shared_expert_intermediate_size=I,
        num_experts=8,
        num_experts_per_tok=3,
        norm_topk_prob=True,
        mlp_only_layers=[0],
        layer_types=["full_attention"] * 3,
        sliding_window=4,
    ),
    "kolibri1-bias": lambda: config_of(
        "kolibri1",
        **TINY,
        head_dim=8,
        moe_intermediate_size=I,
        shared_expert_intermediate_size=I,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    ),
    "aria_text": lambda: config_of(
        "aria_text", **TINY, head_dim=8, intermediate_size=I, moe_num_experts=8, moe_topk=2, moe_num_shared_experts=1
    ),
    # fused experts, viewed stacked by the adapter; the routing is recorded on the experts' call
    "dbrx": lambda: config_of(
        "dbrx",
        vocab_size=128,
        d_model=D,
        n_heads=4,
        n_layers=3,
        max_seq_len=64,
        attn_config=dict(kv_n_heads=2, rope_theta=1e4, clip_qkv=8.0),
        ffn_config=dict(ffn_hidden_size=I, moe_num_experts=8, moe_top_k=3),
    ),
    # sliding and full attention layers, both with an MoE block; no KV cache in the tiny test
    "inkling2_text-bias": lambda: config_of(
        "inkling2_text",
        **{**TINY, "num_hidden_layers": 2},
        unpadded_vocab_size=128,
        head_dim=8,
        swa_num_attention_heads=4,
        swa_num_key_value_heads=2,
        swa_head_dim=8,
        sliding_window_size=4,
        d_rel=4,
        rel_extent=8,
        layer_types=["hybrid_sliding", "full_attention"],
        max_position_embeddings=64,
        moe_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_layers_per_attn_res_block=2,
        eos_token_id=1,
        use_cache=False,
    ),
    # the router's weights are normalized together with the shared experts' (not part of the Routing)
    "inkling_text-dense-mix-bias": lambda: config_of(
        "inkling_text",
        **TINY,
        head_dim=8,
        swa_num_attention_heads=4,
        swa_num_key_value_heads=2,
        swa_head_dim=8,
        sliding_window_size=4,
        d_rel=4,
        rel_extent=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        mlp_layer_types=["dense", "sparse", "sparse"],
        max_position_embeddings=64,
        eos_token_id=1,
        use_cache=False,
    ),
    # router and experts on the decoder layer beside its dense MLP; per-expert scales made non-trivial in save_tiny
    "gemma4_text": lambda: config_of(
        "gemma4_text",
        **TINY,
        head_dim=8,
        global_head_dim=8,
        intermediate_size=24,
        enable_moe_block=True,
        num_experts=8,
        top_k_experts=2,
        moe_intermediate_size=I,
        sliding_window=4,
        hidden_size_per_layer_input=0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        vocab_size_per_layer_input=128,
        max_position_embeddings=64,
    ),
    # a hash-routed first MoE layer (tests/tiny_models.py), then biased sqrt-softplus top-k
    "deepseek_v4-hash": lambda: tiny_config("deepseek_v4"),
    # MLP experts as two stacked matrices, routing returned grouped by expert; attention experts stay resident
    "jetmoe": lambda: config_of(
        "jetmoe",
        vocab_size=128,
        hidden_size=D,
        num_hidden_layers=3,
        num_key_value_heads=2,
        kv_channels=8,
        intermediate_size=I,
        num_local_experts=8,
        num_experts_per_tok=2,
    ),
}
# families not loaded by AutoModelForCausalLM
MODEL_CLASSES = {
    "mistral4-groups": Mistral4ForCausalLM,
    "qwen3_vl_moe-dense-mix": AutoModelForImageTextToText,
    "glm4v_moe-groups-bias": AutoModelForImageTextToText,
}

# decoder indices of the MoE layers where some layers are dense (all others: every layer)
MOE_DECODER_INDICES = {
    "qwen2_moe-dense-mix": [0, 2],
    "qwen3_moe-sparse-step-renorm": [1, 3],
    "deepseek_v2-greedy-dense-mix": [1, 2],
    "deepseek_v3-groups-bias": [1, 2],
    "qwen3_next-dense-mix": [0, 1, 3],
    "ernie4_5_moe-dense-mix-bias": [1, 2],
    "glm4_moe-groups-bias": [1, 2],
    "dots1-dense-mix": [1, 2],
    "glm4_moe_lite-dense-mix": [1, 2],
    "exaone_moe-dense-mix": [1, 2],
    "cohere2_moe-softmax": [1, 2],
    "lfm2_moe-dense-mix-bias": [1, 2],
    "deepseek_v32-dense-mix": [1, 2],
    "nemotron_h-hybrid": [1, 3],
    "llama4_text-interleaved": [0, 2],
    "jamba-hybrid": [1, 3],
    "afmoe-dense-mix-bias": [1, 2],
    "kimi_linear-hybrid": [1, 2],
    "mimo_v2_flash": [1, 2],
    "bailing_hybrid": [1, 2],
    "mistral4-groups": [1, 2],
    "qwen3_vl_moe-dense-mix": [0, 2],
    "glm4v_moe-groups-bias": [1, 2],
    "axk1-groups-bias": [1, 2],
    "dots3_note_text-groups-bias": [1, 2],
    "glm_moe_dsa-groups-bias": [1, 2],
    "hy_v4-groups-bias": [1, 2],
    "sarvam_moe-groups-bias": [1, 2],
    "sarvam_mla-groups-bias": [1, 2],
    "beam-groups-bias": [1, 2],
    "axk2-groups-bias": [1, 2],
    "axk2-no-groups-bias": [1, 2],
    "hy_v3-bias": [1, 2],
    "minimax_m3_vl_text-bias": [1, 2],
    "laguna-softcap-bias": [1, 2],
    "flint-renorm": [1, 2],
    "inkling_text-dense-mix-bias": [1, 2],
}
# model types (or single FAMILY_CONFIGS entries) with always-resident experts
SHARED_EXPERTS = {
    "qwen2_moe",
    "qwen3_next",
    "qwen3_5_moe_text",
    "deepseek_v2",
    "deepseek_v3",
    "ernie4_5_moe",
    "glm4_moe",
    "glm4_moe_lite",
    "hunyuan_v1_moe",
    "dots1",
    "exaone_moe",
    "solar_open",
    "cohere2_moe-softmax",
    "deepseek_v32",
    "nemotron_h",
    "llama4_text",
    "granitemoeshared",
    "granitemoehybrid",
    "afmoe",
    "kimi_linear",
    "bailing_hybrid",
    "mistral4",
    "glm4v_moe_text",
    "granitemoe_swa",
    "axk1",
    "dots3_note_text",
    "glm_moe_dsa",
    "hy_v4",
    "sarvam_moe",
    "sarvam_mla",
    "qwen4_exp_text",
    "lara_mini",
    "axk2",
    "hy_v3",
    "minimax_m3_vl_text",
    "laguna",
    "flint",
    "kolibri1",
    "aria_text",
    "deepseek_v4",
    "inkling_text",
}
# stacked expert tensors and the parameters of one expert (SwiGLU: gate+up [2I, D] and down [D, I])
SWIGLU = (["down_proj", "gate_up_proj"], 3 * D * I)
EXPERT_TENSORS = {
    "gpt_oss": (
        ["down_proj", "down_proj_bias", "gate_up_proj", "gate_up_proj_bias"],
        D * 2 * I + 2 * I + I * D + D,
    ),
    "nemotron_h": (["down_proj", "up_proj"], 2 * D * I),  # non-gated experts
    "dbrx": (["v1", "w1", "w2"], 3 * D * I),  # [E, ffn, D] views of the fused [E x ffn, D] matrices
    "jetmoe": (["input_linear", "output_linear"], 3 * D * I),  # [E, 2I, D] and [E, D, I]
}


def config_of(model_type: str, **settings):
    """A config of the class transformers registers for `model_type` (families without a top-level import)."""
    return CONFIG_MAPPING[model_type](**settings)


def save_tiny(family: str, path) -> None:
    torch.manual_seed(0)
    model_class = MODEL_CLASSES.get(family, AutoModelForCausalLM)
    config = FAMILY_CONFIGS[family]()
    model = model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)
    randomize_routing_buffers(model)
    model.save_pretrained(path)


@pytest.fixture(scope="module")
def saved_family(tmp_path_factory):
    """Directory of the saved tiny model of a FAMILY_CONFIGS entry, built once per test module."""
    paths = {}

    def get(family: str):
        if family not in paths:
            paths[family] = tmp_path_factory.mktemp(family)
            save_tiny(family, paths[family])
        return paths[family]

    return get


def load_family(saved_family, family: str, dtype=torch.float32):
    model_class = MODEL_CLASSES.get(family, AutoModelForCausalLM)
    return model_class.from_pretrained(saved_family(family), dtype=dtype).eval()


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_adapter_routing_equals_model_routing(family, saved_family):
    for dtype in (torch.float32, torch.bfloat16):  # bf16 as real checkpoints load: same ids, same weight dtype
        assert_routing_matches(load_family(saved_family, family, dtype))


def assert_routing_matches(model) -> None:
    adapter = get_adapter(model)
    input_ids = torch.randint(0, TINY["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(1))
    # what routing reads besides the hidden state (DeepSeek-V4's token ids, Zaya's previous router state)
    watch = adapter.watch_routing_inputs()
    with torch.no_grad(), record_routing(adapter) as record:
        model(input_ids)
    watch.remove()
    assert adapter.num_layers >= 1
    for layer in range(adapter.num_layers):
        (hidden_TD,) = record.inputs[layer]
        expected = record.routings[layer][0].sorted_by_expert()
        with torch.no_grad():
            got = adapter.route(layer, hidden_TD).sorted_by_expert()
            scores_TE = adapter.selection_scores(layer, hidden_TD)
        assert got.expert_ids_TK.shape == (14, adapter.top_k)
        assert torch.equal(got.expert_ids_TK, expected.expert_ids_TK)
        torch.testing.assert_close(got.weights_TK, expected.weights_TK)
        assert got.weights_TK.dtype == expected.weights_TK.dtype
        assert scores_TE.shape == (14, adapter.num_experts)
        # selection_scores is what top-k runs on: its top-k are the routed experts
        top_ids_TK = scores_TE.topk(adapter.top_k, dim=-1).indices.sort(dim=-1).values
        assert torch.equal(top_ids_TK, got.expert_ids_TK)
        if adapter.renormalize:  # sums to one, times a family's constant (DeepSeek's routed_scaling_factor)
            sums_T = got.weights_TK.sum(-1)
            torch.testing.assert_close(sums_T, sums_T[:1].expand(14))


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_adapter_structure(family, saved_family):
    model = load_family(saved_family, family)
    adapter = get_adapter(model)
    text_config = model.config.get_text_config()
    model_type = text_config.model_type
    assert adapter.decoder_indices == MOE_DECODER_INDICES.get(family, list(range(text_config.num_hidden_layers)))
    assert adapter.num_layers == len(adapter.decoder_indices)
    identity = adapter.identity()
    stacked = getattr(adapter.experts(0), adapter.expert_tensor_names()[0])
    assert identity["num_experts"] == adapter.num_experts == stacked.shape[0]
    assert len(identity["router_fingerprint"]) == 16
    names, per_expert = EXPERT_TENSORS.get(model_type, SWIGLU)
    assert adapter.expert_tensor_names() == names
    assert adapter.expert_bytes(torch.float16) == per_expert * 2
    assert adapter.expert_bytes() == per_expert * 4  # stored fp32
    assert adapter.total_expert_bytes() == per_expert * 4 * adapter.num_experts * adapter.num_layers
    for layer in range(adapter.num_layers):
        shared = adapter.shared_experts(layer)
        assert (shared is not None) == (model_type in SHARED_EXPERTS or family in SHARED_EXPERTS)
        if shared is not None:  # a separate module, not among the offloadable routed experts
            assert not any(p is q for p in shared.parameters() for q in adapter.experts(layer).parameters())


BIASED_FAMILIES = [
    "deepseek_v3-groups-bias",
    "glm4_moe-groups-bias",
    "ernie4_5_moe-dense-mix-bias",
    "dots1-dense-mix",
    "exaone_moe-dense-mix",
    "lfm2_moe-dense-mix-bias",
    "minimax_m2-bias",
    "deepseek_v32-dense-mix",
    "nemotron_h-hybrid",
    "afmoe-dense-mix-bias",
    "kimi_linear-hybrid",
    "mimo_v2_flash",
    "bailing_hybrid",
    "glm4v_moe-groups-bias",
    "axk1-groups-bias",
    "dots3_note_text-groups-bias",
    "glm_moe_dsa-groups-bias",
    "hy_v4-groups-bias",
    "sarvam_moe-groups-bias",
    "sarvam_mla-groups-bias",
    "beam-groups-bias",
    "axk2-groups-bias",
    "axk2-no-groups-bias",
    "inkling2_text-bias",
    "inkling_text-dense-mix-bias",
    "hy_v3-bias",
    "minimax_m3_vl_text-bias",
    "laguna-softcap-bias",
    "kolibri1-bias",
]


@pytest.mark.parametrize("family", BIASED_FAMILIES)
def test_correction_bias_and_groups_change_the_choice(family, saved_family):
    """The variants really exercise the rule: plain top-k of the logits would pick other experts."""
    model = load_family(saved_family, family)
    adapter = get_adapter(model)
    biases = [t for n, t in adapter.routing_tensors(0) if n.endswith(("e_score_correction_bias", "expert_bias"))]
    assert len(biases) == 1 and biases[0].abs().sum() > 0, "the correction bias must survive save/load"
    hidden_TD = torch.randn(64, D, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        routing = adapter.route(0, hidden_TD)
    ids_TK = routing.sorted_by_expert().expert_ids_TK
    plain_TK = routing.logits_TE.topk(adapter.top_k).indices.sort(-1).values  # sigmoid, softmax keep the order
    assert not torch.equal(ids_TK, plain_TK)
    num_groups = getattr(adapter.config, "n_group", None) or 1
    if num_groups > 1:  # the chosen experts of a token come from at most topk_group groups
        groups_TK = ids_TK // (adapter.num_experts // num_groups)
        assert all(len(set(row.tolist())) <= adapter.config.topk_group for row in groups_TK)


def test_fingerprint_is_dtype_independent(saved_family):
    model = load_family(saved_family, "olmoe")
    bf16 = load_family(saved_family, "olmoe", torch.bfloat16)
    assert get_adapter(model).router_fingerprint() == get_adapter(bf16).router_fingerprint()


@pytest.mark.parametrize("family", BIASED_FAMILIES)
def test_fingerprint_sees_correction_bias(family, saved_family):
    adapter = get_adapter(load_family(saved_family, family))
    before = adapter.router_fingerprint()
    (bias,) = [t for n, t in adapter.routing_tensors(0) if n.endswith(("e_score_correction_bias", "expert_bias"))]
    with torch.no_grad():
        bias.add_(0.5)
    assert adapter.router_fingerprint() != before


def test_non_moe_model_is_rejected_with_supported_list():
    model = AutoModelForCausalLM.from_config(LlamaConfig(**TINY, intermediate_size=16))
    with pytest.raises(UnsupportedModelError) as err:
        get_adapter(model)
    for model_type in supported_model_types():
        assert model_type in str(err.value)


def test_dbrx_view_shares_the_fused_storage_and_the_runtime_refuses_it(saved_family):
    """The stacked view is the model's own memory (no copy); the runtime, which needs an experts module called
    with routed ids, refuses DBRX in one line before moving any weight."""
    import runtime

    model = load_family(saved_family, "dbrx")
    adapter = get_adapter(model)
    fused = adapter.moe_blocks[1].experts.mlp.w1
    assert adapter.experts(1).w1.data_ptr() == fused.data_ptr()
    assert torch.equal(adapter.experts(1).w1[2], fused[2 * I : 3 * I])
    with pytest.raises(UnsupportedModelError, match="only drives sparse experts"):
        runtime.offload(model, capacity=0.5)


def test_dbrx_recorded_logits_are_the_routers(saved_family):

    model = load_family(saved_family, "dbrx")
    adapter = get_adapter(model)
    with torch.no_grad(), record_routing(adapter, keep_logits=True) as record:
        model(torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(3)))
    for layer in range(adapter.num_layers):
        with torch.no_grad():
            expected_TE = adapter.moe_blocks[layer].router(record.inputs[layer][0])
        torch.testing.assert_close(record.routings[layer][0].logits_TE, expected_TE)
