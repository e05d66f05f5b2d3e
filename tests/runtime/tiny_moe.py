"""Tiny locally-built MoE models for the runtime tests (CPU, random weights, seeded; no download).

`tiny_model(family)` builds one of `TINY_FAMILIES` (each under a second); `greedy(model, ids)` is the
generation every identity test compares; `prompt_ids()` a seeded batch of two prompts.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    DeepseekV3Config,
    GptOssConfig,
    Llama4TextConfig,
    LlamaConfig,
    MixtralConfig,
    OlmoeConfig,
    Qwen2MoeConfig,
    Qwen3MoeConfig,
)

TINY = dict(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)
I = 16  # expert intermediate size
QWEN = dict(head_dim=8, intermediate_size=24, moe_intermediate_size=I)

TINY_FAMILIES = {
    "olmoe": lambda: OlmoeConfig(**TINY, intermediate_size=I, num_experts=8, num_experts_per_tok=3),
    "mixtral": lambda: MixtralConfig(**TINY, intermediate_size=I, num_local_experts=8, num_experts_per_tok=2),
    # a shared expert (always resident) and a dense decoder layer between the MoE layers
    "qwen2_moe": lambda: Qwen2MoeConfig(
        **TINY, **QWEN, shared_expert_intermediate_size=I, num_experts=8, num_experts_per_tok=2, mlp_only_layers=[1]
    ),
    "qwen3_moe": lambda: Qwen3MoeConfig(**TINY, **QWEN, num_experts=8, num_experts_per_tok=3, norm_topk_prob=True),
    # grouped routing with a correction bias, shared experts, a dense first layer
    "deepseek_v3": lambda: DeepseekV3Config(
        **TINY,
        kv_lora_rank=16,
        q_lora_rank=None,
        qk_rope_head_dim=4,
        qk_nope_head_dim=4,
        v_head_dim=8,
        intermediate_size=24,
        moe_intermediate_size=I,
        n_shared_experts=1,
        n_routed_experts=16,
        num_experts_per_tok=3,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
    ),
    # expert biases, transposed weights, its own gating
    "gpt_oss": lambda: GptOssConfig(
        **TINY, head_dim=8, intermediate_size=I, num_local_experts=8, num_experts_per_tok=3
    ),
}


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    config = TINY_FAMILIES[family]()
    config.eos_token_id = None  # generate exactly max_new_tokens
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    for module in model.modules():
        if hasattr(module, "e_score_correction_bias"):  # zero at init: give it values that change the choice
            module.e_score_correction_bias.normal_(0.0, 0.05)
    return model


def tiny_dense_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(LlamaConfig(**TINY, intermediate_size=I)).eval()


def tiny_llama4_model() -> torch.nn.Module:
    """Llama 4's experts run every expert on score-weighted inputs (no expert ids): not offloadable."""
    config = Llama4TextConfig(
        **TINY,
        head_dim=8,
        intermediate_size=I,
        intermediate_size_mlp=24,
        num_local_experts=8,
        num_experts_per_tok=2,
        moe_layers=[0, 2],
        attention_chunk_size=None,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def greedy(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int = 8) -> torch.Tensor:
    return model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)


def prompt_ids() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(1, 128, (2, 10))
