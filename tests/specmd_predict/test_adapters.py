"""Every adapter reproduces its family's own routing, through the same from_pretrained path a hub id takes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, OlmoeConfig

from specmd_predict.adapters import UnsupportedModelError, get_adapter, supported_model_types
from specmd_predict.capture import record_routing

TINY = dict(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)

FAMILY_CONFIGS = {
    "olmoe": lambda: OlmoeConfig(**TINY, intermediate_size=16, num_experts=8, num_experts_per_tok=2),
    "olmoe-renorm": lambda: OlmoeConfig(
        **TINY, intermediate_size=16, num_experts=8, num_experts_per_tok=3, norm_topk_prob=True
    ),
}


def load_roundtrip(config, path):
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_adapter_routing_equals_model_routing(family, tmp_path):
    model = load_roundtrip(FAMILY_CONFIGS[family](), tmp_path)
    adapter = get_adapter(model)
    input_ids = torch.randint(0, TINY["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), record_routing(adapter) as record:
        model(input_ids)
    assert adapter.num_layers >= 1
    for layer in range(adapter.num_layers):
        (hidden_TD,) = record.inputs[layer]
        expected = record.routings[layer][0].sorted_by_expert()
        got = adapter.route(layer, hidden_TD).sorted_by_expert()
        assert got.expert_ids_TK.shape == (14, adapter.top_k)
        assert torch.equal(got.expert_ids_TK, expected.expert_ids_TK)
        torch.testing.assert_close(got.weights_TK, expected.weights_TK)
        scores_TE = adapter.selection_scores(layer, hidden_TD)
        assert scores_TE.shape == (14, adapter.num_experts)


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_adapter_structure(family, tmp_path):
    model = load_roundtrip(FAMILY_CONFIGS[family](), tmp_path)
    adapter = get_adapter(model)
    identity = adapter.identity()
    assert identity["num_experts"] == adapter.num_experts
    assert len(identity["router_fingerprint"]) == 16
    names = adapter.expert_tensor_names()
    assert names, "an adapter must find the stacked expert tensors"
    per_expert = sum(getattr(adapter.experts(0), n)[0].numel() for n in names)
    assert adapter.expert_bytes(torch.float16) == per_expert * 2


def test_fingerprint_is_dtype_independent(tmp_path):
    model = load_roundtrip(FAMILY_CONFIGS["olmoe"](), tmp_path)
    bf16 = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert get_adapter(model).router_fingerprint() == get_adapter(bf16).router_fingerprint()


def test_non_moe_model_is_rejected_with_supported_list():
    model = AutoModelForCausalLM.from_config(LlamaConfig(**TINY, intermediate_size=16))
    with pytest.raises(UnsupportedModelError) as err:
        get_adapter(model)
    for model_type in supported_model_types():
        assert model_type in str(err.value)
