"""The tiny random MoE models every test builds (CPU, seeded, no download), from one table of configs.

    from tests.tiny_models import tiny_config, tiny_model, save_tiny_model
    model = tiny_model("olmoe", num_experts_per_tok=3)            # eval mode, seeded
    folder = save_tiny_model("deepseek_v3", path, tokenizer)      # loads through from_pretrained like a hub id

`FAMILIES` gives every supported family's smallest sensible config (hidden size 32, experts 16 wide, 8 or 16 experts,
3 decoder layers unless a family's layer pattern needs more), keyed by the model type transformers registers its
config under; a test overrides only what it is about (vocab of its tokenizer, number of layers, top-k):
tests/adapters/test_adapters.py's variants each switch on one branch of a family's routing rule. Routing buffers
that init leaves trivial (correction biases, scales, hash tables) get random values that change the routing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, Mistral4ForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

BASE = dict(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)
KV4 = BASE | dict(num_key_value_heads=4)  # MLA and indexed attention: as many KV heads as heads
D, I = BASE["hidden_size"], 16  # hidden size, expert intermediate size of every config below

# the pieces many families' configs share
FFN = dict(intermediate_size=24, moe_intermediate_size=I)  # a dense MLP (dense layers, shared experts) beside experts
QWEN = dict(head_dim=8, **FFN)
MLA = dict(kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8)
MLA_Q = MLA | dict(q_lora_rank=8)
E8 = dict(num_experts=8, num_experts_per_tok=2)
LOCAL8 = dict(num_local_experts=8, num_experts_per_tok=2)
ROUTED8 = dict(n_routed_experts=8, num_experts_per_tok=2)
GROUPS = dict(n_routed_experts=16, num_experts_per_tok=3, n_shared_experts=1, n_group=4, topk_group=2)  # 2 of 4 kept
DENSE_FIRST = dict(mlp_layer_types=["dense", "sparse", "sparse"])
INDEXER = dict(index_topk=4, index_head_dim=8, index_n_heads=2)
LINEAR_ATTENTION = dict(
    linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8
)
INKLING_ATTENTION = dict(
    head_dim=8,
    swa_num_attention_heads=4,
    swa_num_key_value_heads=2,
    swa_head_dim=8,
    sliding_window_size=4,
    d_rel=4,
    rel_extent=8,
    max_position_embeddings=64,
    eos_token_id=1,
    use_cache=False,  # no KV cache in the tiny tests
)
VISION = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32)
MROPE = dict(rope_type="default", rope_theta=1e4, mrope_section=[1, 1, 2])

FAMILIES: dict[str, dict] = {
    "afmoe": BASE | dict(head_dim=8, **FFN, **E8, num_shared_experts=1, num_dense_layers=1, route_scale=2.0,
                         global_attn_every_n_layers=2, sliding_window=4),
    "aria_text": BASE | dict(head_dim=8, intermediate_size=I, moe_num_experts=8, moe_topk=2, moe_num_shared_experts=1),
    "axk1": KV4 | dict(**MLA_Q, **FFN, **GROUPS, **DENSE_FIRST, routed_scaling_factor=2.5, norm_topk_prob=True),
    "axk2": KV4 | dict(**MLA_Q, head_dim=4, **FFN, **GROUPS, **DENSE_FIRST, **INDEXER, gated_norm_rank=4,
                       qk_head_dim=8),
    "bailing_hybrid": KV4 | dict(**MLA, head_dim=8, **FFN, **LOCAL8, n_shared_experts=1, n_group=2, topk_group=1,
                                 **DENSE_FIRST, layer_group_size=3, pad_token_id=0, eos_token_id=1),
    "beam": BASE | dict(head_dim=8, **FFN, num_experts=16, num_experts_per_tok=3, n_group=4, topk_group=2,
                        routed_scaling_factor=2.5, **DENSE_FIRST, sliding_window=4,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
    "cohere2_moe": BASE | dict(head_dim=8, intermediate_size=I, num_experts=8),
    # fused experts, viewed stacked by the adapter
    "dbrx": dict(vocab_size=128, d_model=D, n_heads=4, n_layers=3, max_seq_len=64,
                 attn_config=dict(kv_n_heads=2, rope_theta=1e4, clip_qkv=8.0),
                 ffn_config=dict(ffn_hidden_size=I, moe_num_experts=8, moe_top_k=3)),
    "deepseek_v2": BASE | dict(**MLA, **FFN, n_shared_experts=1, **ROUTED8),
    # MLA attention, grouped routing with a correction bias, a shared expert, a dense first decoder layer
    "deepseek_v3": BASE | dict(**MLA, **FFN, **GROUPS, first_k_dense_replace=1, norm_topk_prob=True),
    "deepseek_v32": KV4 | dict(**MLA_Q, head_dim=4, **FFN, **ROUTED8, n_shared_experts=1, n_group=2, topk_group=1,
                               **DENSE_FIRST, **INDEXER),
    # two hash-routed MoE layers (experts from a token-id table), then biased sqrt-softplus top-k; compressed
    # attention layers and hyper-connections around them
    "deepseek_v4": BASE | dict(num_key_value_heads=1, head_dim=16, q_lora_rank=8, moe_intermediate_size=I, **ROUTED8,
                               mlp_layer_types=["hash_moe", "hash_moe", "moe"], sliding_window=4, o_groups=2,
                               o_lora_rank=8, hc_mult=2, max_position_embeddings=64, **INDEXER,
                               layer_types=["sliding_attention", "compressed_sparse_attention",
                                            "heavily_compressed_attention"]),
    "dots1": BASE | dict(head_dim=8, **FFN, **ROUTED8, n_shared_experts=1, n_group=2, topk_group=1,
                         first_k_dense_replace=1, norm_topk_prob=True),
    "dots3_note_text": KV4 | dict(**MLA_Q, head_dim=4, **FFN, shared_experts_intermediate_size=I, **GROUPS,
                                  **DENSE_FIRST, **INDEXER, pad_token_id=0),
    # MoE on decoder layers 1..2 only
    "ernie4_5_moe": BASE | dict(num_hidden_layers=4, **FFN, moe_num_experts=8, moe_k=3, moe_num_shared_experts=1,
                                moe_layer_start_index=1, moe_layer_end_index=2),
    "exaone_moe": BASE | dict(head_dim=8, **FFN, **E8, num_shared_experts=1, first_k_dense_replace=1, n_group=2,
                              topk_group=1),
    "flex_olmo": BASE | dict(intermediate_size=I, **E8, pad_token_id=0, eos_token_id=1),
    "flint": BASE | dict(head_dim=8, **FFN, shared_expert_intermediate_size=I, num_experts=8, num_experts_per_tok=3,
                         norm_topk_prob=True, mlp_only_layers=[0], layer_types=["full_attention"] * 3,
                         sliding_window=4),
    # router and experts on the decoder layer beside its dense MLP
    "gemma4_text": BASE | dict(head_dim=8, global_head_dim=8, intermediate_size=24, enable_moe_block=True,
                               num_experts=8, top_k_experts=2, moe_intermediate_size=I, sliding_window=4,
                               hidden_size_per_layer_input=0, vocab_size_per_layer_input=128,
                               max_position_embeddings=64,
                               layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
    "glm4_moe": BASE | dict(head_dim=8, **FFN, **GROUPS, first_k_dense_replace=1, routed_scaling_factor=2.5),
    "glm4_moe_lite": BASE | dict(**MLA, **FFN, **ROUTED8, n_shared_experts=1, **DENSE_FIRST),
    # the image-text checkpoint, text tokens only
    "glm4v_moe": dict(
        text_config=BASE | dict(head_dim=16, **FFN, **GROUPS, first_k_dense_replace=1,
                                rope_parameters=MROPE | dict(partial_rotary_factor=0.5)),
        vision_config=VISION,
    ),
    "glm_moe_dsa": KV4 | dict(**MLA_Q, head_dim=4, **FFN, **GROUPS, **DENSE_FIRST, **INDEXER),
    # expert biases, transposed weights, its own gating
    "gpt_oss": BASE | dict(head_dim=8, intermediate_size=I, num_local_experts=8, num_experts_per_tok=3),
    # top-k on raw logits, softmax over the k
    "granitemoe": BASE | dict(intermediate_size=I, **LOCAL8),
    "granitemoe_swa": BASE | dict(intermediate_size=I, **LOCAL8, shared_intermediate_size=24),
    "granitemoehybrid": BASE | dict(intermediate_size=I, **LOCAL8, shared_intermediate_size=24, mamba_n_heads=4,
                                    mamba_d_head=16, mamba_d_state=8, mamba_chunk_size=4,
                                    layer_types=["mamba", "attention", "mamba"]),
    "granitemoeshared": BASE | dict(intermediate_size=I, **LOCAL8, shared_intermediate_size=24),
    "hunyuan_v1_moe": BASE | dict(head_dim=8, intermediate_size=I, num_experts=8, moe_topk=2),
    "hy_v3": BASE | dict(head_dim=8, **FFN, **E8, num_shared_experts=1, **DENSE_FIRST),
    "hy_v4": KV4 | dict(**MLA_Q, **FFN, **GROUPS, **DENSE_FIRST, pad_token_id=0),
    # the router's weights are normalized together with the shared experts' (not part of the Routing)
    "inkling_text": BASE | dict(**INKLING_ATTENTION, **FFN, **ROUTED8, n_shared_experts=1, **DENSE_FIRST),
    # sliding and full attention layers, both with an MoE block
    "inkling2_text": BASE | dict(num_hidden_layers=2, **INKLING_ATTENTION, unpadded_vocab_size=128,
                                 moe_intermediate_size=I, **ROUTED8, n_layers_per_attn_res_block=2,
                                 layer_types=["hybrid_sliding", "full_attention"]),
    # decoder layers 2..3 run twice per forward (a looped block), routing each token twice there
    "inkling2_loop_text": BASE | dict(num_hidden_layers=4, **INKLING_ATTENTION, unpadded_vocab_size=128,
                                      moe_intermediate_size=I, **ROUTED8, n_layers_per_attn_res_block=2,
                                      layer_types=["hybrid_sliding", "full_attention"] * 2, loop_layer_index_start=2,
                                      loop_layer_index_end=4, loop_num_passes=2),
    # Mamba / attention+MoE layers; torch Mamba path (no kernels on CPU)
    "jamba": BASE | dict(num_hidden_layers=4, intermediate_size=I, **E8, expert_layer_period=2,
                         expert_layer_offset=1, attn_layer_period=2, attn_layer_offset=0, use_mamba_kernels=False,
                         mamba_d_state=4),
    # MLP experts as two stacked matrices, routing returned grouped by expert; attention experts stay resident
    "jetmoe": dict(vocab_size=128, hidden_size=D, num_hidden_layers=3, num_key_value_heads=2, kv_channels=8,
                   intermediate_size=I, **LOCAL8),
    "kimi_linear": KV4 | dict(**MLA, **FFN, **LOCAL8, n_shared_experts=1, n_group=2, topk_group=1, **DENSE_FIRST,
                              linear_head_dim=8, linear_num_heads=4, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                              layer_types=["linear_attention", "full_attention", "linear_attention"]),
    "kolibri1": BASE | dict(head_dim=8, moe_intermediate_size=I, shared_expert_intermediate_size=I, **LOCAL8,
                            sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
    "laguna": BASE | dict(head_dim=8, **FFN, shared_expert_intermediate_size=I, **E8, moe_router_logit_softcapping=0.5,
                          moe_routed_scaling_factor=2.0, **DENSE_FIRST, num_attention_heads_per_layer=[4, 4, 4],
                          layer_types=["full_attention", "sliding_attention", "full_attention"], sliding_window=4),
    "lara_mini": BASE | dict(**QWEN, shared_expert_intermediate_size=I, **E8, **LINEAR_ATTENTION,
                             layer_types=["linear_attention", "full_attention", "full_attention"]),
    "lfm2_moe": BASE | dict(**FFN, num_experts=8, layer_types=["conv", "full_attention", "conv"]),
    # every expert runs on score-weighted inputs (no expert ids): not offloadable
    "llama4_text": BASE | dict(head_dim=8, intermediate_size=I, intermediate_size_mlp=24, **LOCAL8, moe_layers=[0, 2],
                               attention_chunk_size=None),
    "mellum": BASE | dict(**QWEN, num_experts=8, num_experts_per_tok=3, norm_topk_prob=True),
    "mimo_v2_flash": BASE | dict(head_dim=8, v_head_dim=8, **FFN, **ROUTED8, n_group=2, topk_group=1, **DENSE_FIRST,
                                 sliding_window=4),
    "minimax": BASE | dict(head_dim=8, intermediate_size=I, **LOCAL8, block_size=4,
                           layer_types=["linear_attention", "full_attention", "linear_attention"]),
    "minimax_m2": BASE | dict(head_dim=8, intermediate_size=I, **LOCAL8),
    "minimax_m3_vl_text": BASE | dict(head_dim=8, intermediate_size=I, **LOCAL8, dense_intermediate_size=24,
                                      shared_intermediate_size=I, rotary_dim=4, **DENSE_FIRST,
                                      layer_types=["full_attention"] * 3),
    # 4 groups of 2 experts, 2 kept, over softmax scores (no bias)
    "mistral4": KV4 | dict(**MLA, head_dim=4, **FFN, n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1,
                           n_group=4, topk_group=2, first_k_dense_replace=1, routed_scaling_factor=1.5,
                           norm_topk_prob=True),
    "mixtral": BASE | dict(intermediate_size=I, **LOCAL8),
    # Mamba / MoE / attention / MoE mixers; torch Mamba path (no kernels on CPU)
    "nemotron_h": BASE | dict(num_hidden_layers=4, head_dim=8, **FFN, moe_shared_expert_intermediate_size=I, **ROUTED8,
                              routed_scaling_factor=2.0, layers_block_type=["mamba", "moe", "attention", "moe"],
                              mamba_num_heads=4, mamba_head_dim=8, ssm_state_size=8, n_groups=1, chunk_size=4,
                              use_mamba_kernels=False),
    "olmoe": BASE | dict(intermediate_size=I, **E8),
    "phimoe": BASE | dict(intermediate_size=I, **LOCAL8),
    "qwen2_moe": BASE | dict(**QWEN, shared_expert_intermediate_size=I, **E8),
    "qwen3_5_moe_text": BASE | dict(num_hidden_layers=2, head_dim=8, moe_intermediate_size=I,
                                    shared_expert_intermediate_size=I, **E8, **LINEAR_ATTENTION,
                                    layer_types=["linear_attention", "full_attention"]),
    "qwen3_moe": BASE | dict(**QWEN, **E8),
    "qwen3_next": BASE | dict(num_hidden_layers=4, **QWEN, shared_expert_intermediate_size=I, **E8,
                              norm_topk_prob=True, mlp_only_layers=[2], **LINEAR_ATTENTION,
                              layer_types=["linear_attention", "full_attention"] * 2),
    # the image-text checkpoint, text tokens only
    "qwen3_vl_moe": dict(
        text_config=BASE | dict(head_dim=8, **FFN, **E8, mlp_only_layers=[1], rope_parameters=MROPE),
        vision_config=VISION | dict(deepstack_visual_indexes=[]),
    ),
    "qwen4_exp_text": BASE | dict(**QWEN, shared_expert_intermediate_size=I, **E8, norm_topk_prob=True,
                                  **LINEAR_ATTENTION, indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=8,
                                  indexer_budget=8, indexer_compress_ratio=2,
                                  layer_types=["linear_attention", "indexed_attention", "linear_attention"]),
    "sarvam_mla": BASE | dict(**MLA, **FFN, **GROUPS, first_k_dense_replace=1, norm_topk_prob=True,
                              routed_scaling_factor=2.5),
    "sarvam_moe": BASE | dict(head_dim=8, **FFN, **GROUPS, first_k_dense_replace=1, routed_scaling_factor=2.5),
    "solar_open": BASE | dict(head_dim=8, moe_intermediate_size=I, **ROUTED8, n_shared_experts=1,
                              routed_scaling_factor=2.0),
    # routers read the previous router's state (EDA); top-1 over the experts and a skip class
    "zaya": BASE | dict(head_dim=8, moe_intermediate_size=I, num_experts=8, num_experts_per_tok=1,
                        router_hidden_size=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        max_position_embeddings=64,
                        initializer_range=0.5),  # routers far from uniform: tokens choose different experts
    "llama": BASE | dict(intermediate_size=I),  # dense: the "not an MoE model" case
}  # fmt: skip
# the narrow OLMoE (hidden size 16, 2 heads) of the predictor, training and runtime tests: quick to harvest, train
# and score; tests add the vocab of their tokenizer and their number of layers
NARROW_OLMOE = dict(hidden_size=16, num_attention_heads=2, num_key_value_heads=1, intermediate_size=8)
NO_SPECIAL_TOKENS = dict(eos_token_id=None, pad_token_id=None, bos_token_id=None)  # generations never stop early
# families not loaded by AutoModelForCausalLM
MODEL_CLASSES = {
    "mistral4": Mistral4ForCausalLM,
    "qwen3_vl_moe": AutoModelForImageTextToText,
    "glm4v_moe": AutoModelForImageTextToText,
}


def tiny_config(family: str, **overrides):
    """The config of `family` (a key of FAMILIES: the model type its config class is registered under)."""
    return CONFIG_MAPPING[family](**(FAMILIES[family] | overrides))


def tiny_model(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A seeded random model of `family` in eval mode; `overrides` go to its config."""
    torch.manual_seed(seed)
    config = tiny_config(family, **overrides)
    model_class = MODEL_CLASSES.get(family, AutoModelForCausalLM)
    model = model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)
    randomize_routing_buffers(model.eval())
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
    return tiny_model_and_corpus(root, "olmoe", num_hidden_layers=4, tie_word_embeddings=False)


def tiny_model_and_corpus(root: Path, family: str, corpus_chars: int = 12_000, **overrides) -> tuple[Path, Path]:
    """(model folder, corpus folder) of `family` for end-to-end harvests: the tiny BPE tokenizer (trained on the
    first three validation files of the embedded corpus, vocab 320 with the model's), a 64-token context, and the
    next file's first `corpus_chars` characters as the corpus."""
    from specmd_predict.embedded_corpus import iter_corpus_texts
    from tests.tiny_tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(vocab_size=312, num_texts=3)
    texts = iter_corpus_texts("validation")
    for _ in range(3):
        next(texts)  # the tokenizer's files; the corpus starts after them
    model_dir, corpus = Path(root) / "model", Path(root) / "corpus"
    corpus.mkdir(parents=True)
    corpus.joinpath("a.txt").write_text(next(texts)[:corpus_chars])
    shape = dict(vocab_size=320, max_position_embeddings=64) | overrides
    save_tiny_model(family, model_dir, tokenizer, **shape)
    return model_dir, corpus
