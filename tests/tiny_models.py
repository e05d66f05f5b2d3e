"""The tiny random MoE models every test builds (CPU, seeded, no download), from one table of configs.

    from tests.tiny_models import tiny_config, tiny_model, save_tiny_model
    model = tiny_model("olmoe", num_experts_per_tok=3)            # eval mode, seeded
    folder = save_tiny_model("deepseek_v3", path, tokenizer)      # loads through from_pretrained like a hub id

`FAMILIES` gives each family's smallest sensible shape on top of `BASE`; a test overrides only what it is
about (vocab of its tokenizer, number of layers, top-k). Correction biases (zero at init) get random values so
that they really change the routing. tests/specmd_predict/test_adapters.py keeps its own per-variant table:
there the configs ARE the subject (each exercises one branch of a family's routing rule).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    DeepseekV3Config,
    DeepseekV4Config,
    GptOssConfig,
    GraniteMoeConfig,
    Llama4TextConfig,
    LlamaConfig,
    MixtralConfig,
    OlmoeConfig,
    Qwen2MoeConfig,
    Qwen3MoeConfig,
    ZayaConfig,
)

BASE = dict(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)
I = 16  # expert intermediate size

FAMILIES: dict[str, tuple[type, dict]] = {
    "olmoe": (OlmoeConfig, dict(intermediate_size=I, num_experts=8, num_experts_per_tok=2)),
    "mixtral": (MixtralConfig, dict(intermediate_size=I, num_local_experts=8, num_experts_per_tok=2)),
    "qwen2_moe": (
        Qwen2MoeConfig,
        dict(
            head_dim=8,
            intermediate_size=24,
            moe_intermediate_size=I,
            shared_expert_intermediate_size=I,
            num_experts=8,
            num_experts_per_tok=2,
        ),
    ),
    "qwen3_moe": (
        Qwen3MoeConfig,
        dict(head_dim=8, intermediate_size=24, moe_intermediate_size=I, num_experts=8, num_experts_per_tok=2),
    ),
    # MLA attention, grouped routing with a correction bias, a shared expert, a dense first decoder layer
    "deepseek_v3": (
        DeepseekV3Config,
        dict(
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
        ),
    ),
    # expert biases, transposed weights, its own gating
    "gpt_oss": (GptOssConfig, dict(head_dim=8, intermediate_size=I, num_local_experts=8, num_experts_per_tok=3)),
    # top-k on raw logits, softmax over the k
    "granitemoe": (GraniteMoeConfig, dict(intermediate_size=I, num_local_experts=8, num_experts_per_tok=2)),
    # every expert runs on score-weighted inputs (no expert ids): not offloadable
    "llama4_text": (
        Llama4TextConfig,
        dict(
            head_dim=8,
            intermediate_size=I,
            intermediate_size_mlp=24,
            num_local_experts=8,
            num_experts_per_tok=2,
            moe_layers=[0, 2],
            attention_chunk_size=None,
        ),
    ),
    # two hash-routed MoE layers (experts from a token-id table), then biased sqrt-softplus top-k; compressed
    # attention layers and hyper-connections around them
    "deepseek_v4": (
        DeepseekV4Config,
        dict(
            num_key_value_heads=1,
            head_dim=16,
            q_lora_rank=8,
            moe_intermediate_size=I,
            n_routed_experts=8,
            num_experts_per_tok=2,
            mlp_layer_types=["hash_moe", "hash_moe", "moe"],
            layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"],
            sliding_window=4,
            o_groups=2,
            o_lora_rank=8,
            index_n_heads=2,
            index_head_dim=8,
            index_topk=4,
            hc_mult=2,
            max_position_embeddings=64,
        ),
    ),
    # routers read the previous router's state (EDA); top-1 over the experts and a skip class
    "zaya": (
        ZayaConfig,
        dict(
            head_dim=8,
            moe_intermediate_size=I,
            num_experts=8,
            num_experts_per_tok=1,
            router_hidden_size=16,
            initializer_range=0.5,  # routers far from uniform: tokens choose different experts
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    "llama": (LlamaConfig, dict(intermediate_size=I)),  # dense: the "not an MoE model" case
}


def tiny_config(family: str, **overrides):
    config_class, shape = FAMILIES[family]
    return config_class(**(BASE | shape | overrides))


def tiny_model(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A seeded random model of `family` in eval mode; `overrides` go to its config."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **overrides)).eval()
    randomize_routing_buffers(model)
    return model


@torch.no_grad()
def randomize_routing_buffers(model: torch.nn.Module) -> None:
    """Give the routing buffers that init leaves trivial values that matter: correction biases (zero, or -1 on
    Zaya's skip class) that change the choice, Gemma 4's per-expert and Inkling's global scales (ones),
    DeepSeek-V4's token-to-experts hash tables (zeros: k distinct experts per token id instead)."""
    for module in model.modules():
        for name in ("e_score_correction_bias", "expert_bias", "balancing_biases"):
            if isinstance(getattr(module, name, None), torch.Tensor):
                getattr(module, name).normal_(0.0, 0.05)
        for name in ("per_expert_scale", "global_scale"):  # Gemma 4's, Inkling's: ones at init
            if isinstance(getattr(module, name, None), torch.Tensor):
                getattr(module, name).uniform_(0.5, 1.5)
        table = getattr(module, "tid2eid", None)
        if isinstance(table, torch.Tensor):
            vocab, top_k = table.shape
            table.copy_(torch.rand(vocab, module.num_experts).argsort(dim=-1)[:, :top_k])


def save_tiny_model(family: str, folder: Path, tokenizer=None, seed: int = 0, **overrides) -> Path:
    """Save `tiny_model(family)` (and the tokenizer, whose eos/pad ids the config takes) into `folder`."""
    if tokenizer is not None:
        overrides = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id} | overrides
    tiny_model(family, seed, **overrides).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return Path(folder)


def tiny_olmoe_and_corpus(root: Path) -> tuple[Path, Path]:
    """(model folder, corpus folder) for end-to-end harvests: a 4-layer tiny OLMoE with a tiny BPE tokenizer
    (trained on the first three validation files of the embedded corpus), and the next file (12k characters)."""
    from specmd_predict.embedded_corpus import iter_corpus_texts
    from tests.tiny_tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(vocab_size=312, num_texts=3)
    texts = iter_corpus_texts("validation")
    for _ in range(3):
        next(texts)  # the tokenizer's files; the corpus starts after them
    model_dir, corpus = Path(root) / "model", Path(root) / "corpus"
    corpus.mkdir(parents=True)
    corpus.joinpath("a.txt").write_text(next(texts)[:12_000])
    save_tiny_model("olmoe", model_dir, tokenizer, vocab_size=320, num_hidden_layers=4, max_position_embeddings=64,
                    tie_word_embeddings=False)  # fmt: skip
    return model_dir, corpus
