"""Tiny locally-built MoE models (with a tiny byte-level BPE tokenizer) for the harvest tests.

`tiny_model_dir(family)` saves a seeded random model of `family` and the tokenizer into a folder and
returns it: harvests load it through `from_pretrained` like a hub id.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from specmd_predict.adapters import ADAPTERS
from specmd_predict.embedded_corpus import iter_corpus_texts
from tests.tiny_tokenizer import build_tiny_tokenizer

torch.set_num_threads(1)  # tiny models gain nothing from threads, and the shared 2-core machine is busy

VOCAB = 320
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=False,
)


def _family_configs() -> dict:
    from transformers import DeepseekV3Config, LlamaConfig, MixtralConfig, OlmoeConfig, Qwen2MoeConfig

    return {
        "olmoe": lambda: OlmoeConfig(**TINY, intermediate_size=16, num_experts=8, num_experts_per_tok=2),
        "mixtral": lambda: MixtralConfig(**TINY, intermediate_size=16, num_local_experts=8, num_experts_per_tok=2),
        "qwen2_moe": lambda: Qwen2MoeConfig(
            **TINY,
            intermediate_size=16,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=16,
            num_experts=8,
            num_experts_per_tok=2,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        ),
        # decoder layer 0 dense (MoE layers 1, 2), MLA attention, group-limited routing with a correction bias
        "deepseek_v3": lambda: DeepseekV3Config(
            **TINY,
            kv_lora_rank=16,
            q_lora_rank=None,
            qk_rope_head_dim=4,
            qk_nope_head_dim=4,
            v_head_dim=8,
            intermediate_size=24,
            moe_intermediate_size=16,
            n_shared_experts=1,
            n_routed_experts=16,
            num_experts_per_tok=3,
            n_group=4,
            topk_group=2,
            first_k_dense_replace=1,
            norm_topk_prob=True,
        ),
        "llama": lambda: LlamaConfig(**TINY, intermediate_size=16),
    }


def build_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer(vocab_size=VOCAB - 8, num_texts=5)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """Function `family -> folder` (built once per session); skips a family whose adapter is not registered."""
    built: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in built:
            if family != "llama" and family not in ADAPTERS:
                pytest.skip(f"no adapter registered for {family} yet")
            folder = tmp_path_factory.mktemp(f"model-{family}")
            config = _family_configs()[family]()
            config.eos_token_id = tiny_tokenizer.eos_token_id
            config.pad_token_id = tiny_tokenizer.pad_token_id
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(config).save_pretrained(folder)
            tiny_tokenizer.save_pretrained(folder)
            built[family] = folder
        return built[family]

    return make


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory) -> Path:
    """A folder of three .txt files (stdlib sources): about 20k tokens of the tiny tokenizer."""
    folder = tmp_path_factory.mktemp("corpus")
    texts = iter_corpus_texts("validation")
    for i in range(3):
        folder.joinpath(f"doc{i}.txt").write_text(next(texts)[:20_000])
    return folder
