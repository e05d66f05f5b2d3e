"""Tiny locally-built MoE models for the runtime tests (CPU, random weights, seeded; no download).

`tiny_model(family)` builds one of `TINY_FAMILIES` (tests/tiny_models.py's, with the runtime's variations);
`greedy(model, ids)` is the generation every identity test compares; `prompt_ids()` a seeded batch of two prompts.
"""

from __future__ import annotations

import torch

from tests import tiny_models

# the runtime's variants of the shared tiny families: top-3 where a wider choice exercises more slots, a dense
# decoder layer between qwen2_moe's MoE layers, DeepSeek's routed scaling
TINY_FAMILIES = {
    "olmoe": dict(num_experts_per_tok=3),
    "mixtral": {},
    "qwen2_moe": dict(mlp_only_layers=[1]),
    "qwen3_moe": dict(num_experts_per_tok=3, norm_topk_prob=True),
    "deepseek_v3": dict(routed_scaling_factor=2.5),
    "gpt_oss": {},
}


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    return tiny_models.tiny_model(family, seed, eos_token_id=None, **TINY_FAMILIES[family])  # exact max_new_tokens


def tiny_dense_model() -> torch.nn.Module:
    return tiny_models.tiny_model("llama")


def tiny_llama4_model() -> torch.nn.Module:
    """Llama 4's experts run every expert on score-weighted inputs (no expert ids): not offloadable."""
    return tiny_models.tiny_model("llama4_text")


def greedy(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int = 8) -> torch.Tensor:
    return model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)


def prompt_ids() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(1, 128, (2, 10))
