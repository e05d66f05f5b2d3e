"""Every adapter reproduces its family's own routing, through the same from_pretrained path a hub id takes.

Run: pytest tests/adapters/test_adapters.py
Each VARIANTS entry is a tiny random model (tests/tiny_models.py), saved once per module and loaded in fp32 and bf16
(CPU, single-threaded); variants exercise each branch of a family's rule (renormalization on/off, group limits and
correction biases, dense layers mixed with MoE layers, PhiMoE's jitter band, hash-routed and looped layers).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from specmd_predict.adapters import UnsupportedModelError, get_adapter, supported_model_types
from specmd_predict.capture import record_routing
from tests.tiny_models import BASE, DENSE_FIRST, MODEL_CLASSES, ROUTED8, D, I, tiny_model

# variant -> config overrides on top of tests/tiny_models.py's FAMILIES[family], where family is the name up to the
# first "-"; each variant exercises one branch of its family's rule
VARIANTS: dict[str, dict] = {
    "olmoe": {},
    "olmoe-renorm": dict(num_experts_per_tok=3, norm_topk_prob=True),
    "mixtral": {},
    "qwen2_moe-dense-mix": dict(mlp_only_layers=[1]),  # decoder layer 1 is a dense MLP
    "qwen2_moe-renorm": dict(num_experts_per_tok=3, norm_topk_prob=True),
    "qwen3_moe": {},
    # MoE on every second decoder layer (1 and 3), top-k renormalized
    "qwen3_moe-sparse-step-renorm": dict(
        num_hidden_layers=4, num_experts_per_tok=3, norm_topk_prob=True, decoder_sparse_step=2
    ),
    "deepseek_v2-greedy-dense-mix": dict(first_k_dense_replace=1, routed_scaling_factor=2.0),
    "deepseek_v2-group-limited": dict(
        num_experts_per_tok=3, topk_method="group_limited_greedy", n_group=4, topk_group=2, routed_scaling_factor=16.0
    ),
    "deepseek_v3-groups-bias": dict(routed_scaling_factor=2.5),  # 4 groups of 4 experts, 2 kept
    "deepseek_v3-one-group-no-norm": dict(
        **ROUTED8, n_group=1, topk_group=1, first_k_dense_replace=0, norm_topk_prob=False, routed_scaling_factor=1.5
    ),
    "gpt_oss": {},
    "phimoe": {},
    # a wide jitter band: more experts share each softmax, so the weights move away from 1
    "phimoe-wide-band": dict(router_jitter_noise=0.4),
    "qwen3_next-dense-mix": {},
    "granitemoe": {},
    "ernie4_5_moe-dense-mix-bias": {},
    "glm4_moe-groups-bias": {},
    "hunyuan_v1_moe": {},
    "minimax": {},
    "dots1-dense-mix": {},
    "glm4_moe_lite-dense-mix": {},
    "exaone_moe-dense-mix": {},
    "solar_open": {},
    "flex_olmo": {},
    "cohere2_moe-softmax": dict(
        num_experts_per_tok=2, num_shared_experts=1, **DENSE_FIRST, prefix_dense_intermediate_size=24
    ),
    "cohere2_moe-sigmoid-no-norm": dict(
        num_experts_per_tok=3, num_shared_experts=0, expert_selection_fn="sigmoid", norm_topk_prob=False
    ),
    "lfm2_moe-dense-mix-bias": dict(num_experts_per_tok=2, num_dense_layers=1, routed_scaling_factor=1.5),
    "lfm2_moe-no-bias": dict(num_experts_per_tok=3, num_dense_layers=0, use_expert_bias=False, norm_topk_prob=False),
    "minimax_m2-bias": {},
    "qwen3_5_moe_text": {},
    "deepseek_v32-dense-mix": {},
    "nemotron_h-hybrid": {},
    "llama4_text-interleaved": {},
    "jamba-hybrid": {},
    "granitemoeshared": {},
    "granitemoehybrid": {},
    "afmoe-dense-mix-bias": {},
    "kimi_linear-hybrid": {},
    "mimo_v2_flash": {},
    "bailing_hybrid": {},
    "mistral4-groups": {},
    "qwen3_vl_moe-dense-mix": {},
    "glm4v_moe-groups-bias": {},
    "granitemoe_swa": {},
    "axk1-groups-bias": {},
    "dots3_note_text-groups-bias": {},
    "glm_moe_dsa-groups-bias": {},
    "hy_v4-groups-bias": {},
    "sarvam_moe-groups-bias": {},
    "sarvam_mla-groups-bias": {},
    "mellum-renorm": {},
    "qwen4_exp_text": {},
    "lara_mini": {},
    "beam-groups-bias": {},
    "axk2-groups-bias": {},
    "axk2-no-groups-bias": dict(**ROUTED8, n_group=None, topk_group=None, norm_topk_prob=False),
    "hy_v3-bias": {},
    "minimax_m3_vl_text-bias": {},
    "laguna-softcap-bias": {},
    "flint-renorm": {},
    "kolibri1-bias": {},
    "aria_text": {},
    "dbrx": {},  # the routing is recorded on the experts' call
    "inkling2_text-bias": {},
    "inkling_text-dense-mix-bias": {},
    "inkling2_loop_text-looped": {},  # MoE layers 2, 3 route twice per forward: every call is checked
    "gemma4_text": {},  # per-expert scales made non-trivial
    "jetmoe": {},
    "deepseek_v4-hash": {},  # hash-routed first layers, then biased sqrt-softplus top-k
    "zaya": {},  # routers read the previous router's state (test_zaya.py also makes tokens choose the skip class)
}


def family_of(variant: str) -> str:
    return variant.partition("-")[0]


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
# model types (or single VARIANTS entries) with always-resident experts
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


def save_tiny(variant: str, path) -> None:
    tiny_model(family_of(variant), **VARIANTS[variant]).save_pretrained(path)


@pytest.fixture(scope="module")
def saved_family(tmp_path_factory):
    """Directory of the saved tiny model of a VARIANTS entry, built once per test module."""
    paths = {}

    def get(family: str):
        if family not in paths:
            paths[family] = tmp_path_factory.mktemp(family)
            save_tiny(family, paths[family])
        return paths[family]

    return get


def load_family(saved_family, family: str, dtype=torch.float32):
    model_class = MODEL_CLASSES.get(family_of(family), AutoModelForCausalLM)
    return model_class.from_pretrained(saved_family(family), dtype=dtype).eval()


@pytest.mark.parametrize("family", sorted(VARIANTS))
def test_adapter_routing_equals_model_routing(family, saved_family):
    for dtype in (torch.float32, torch.bfloat16):  # bf16 as real checkpoints load: same ids, same weight dtype
        assert_routing_matches(load_family(saved_family, family, dtype))


def assert_routing_matches(model) -> None:
    adapter = get_adapter(model)
    input_ids = torch.randint(0, BASE["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(1))
    # what routing reads besides the hidden state (DeepSeek-V4's token ids, Zaya's previous router state)
    watch = adapter.watch_routing_inputs()
    with torch.no_grad(), record_routing(adapter) as record:
        model(input_ids)
    watch.remove()
    assert adapter.num_layers >= 1
    for layer in range(adapter.num_layers):
        assert len(record.routings[layer]) == adapter.calls_per_forward(layer)  # twice or more in a looped block
        for hidden_TD, routing in zip(record.inputs[layer], record.routings[layer], strict=True):
            assert_route_matches(adapter, layer, hidden_TD, routing)


def assert_route_matches(adapter, layer: int, hidden_TD: torch.Tensor, routing) -> None:
    expected = routing.sorted_by_expert()
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


@pytest.mark.parametrize("family", sorted(VARIANTS))
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
    "inkling2_loop_text-looped",
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
    model = AutoModelForCausalLM.from_config(LlamaConfig(**BASE, intermediate_size=16))
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
