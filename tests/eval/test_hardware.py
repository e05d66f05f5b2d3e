"""Hardware cost model (eval/hardware.py): profiles, copy and compute times, shapes from configs.

pytest tests/eval/test_hardware.py
"""

from __future__ import annotations

import pytest

from eval.hardware import PROFILES, SHAPES, ModelShape, get_profile, get_shape

MIXTRAL_CONFIG = {
    "model_type": "mixtral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
}
OLMOE_CONFIG = {
    "model_type": "olmoe",
    "hidden_size": 2048,
    "intermediate_size": 1024,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "num_experts": 64,
    "num_experts_per_tok": 8,
}


def test_required_profiles_exist():
    assert {"pcie4-x16", "pcie5-x16", "a100-pcie", "h100-pcie", "gh200-c2c", "rtx4090"} <= set(PROFILES)
    assert get_profile("gh200-c2c").h2d_bytes_per_s > get_profile("pcie5-x16").h2d_bytes_per_s
    with pytest.raises(ValueError, match="Did you mean 'h100-pcie'"):
        get_profile("h100-pci")


def test_copy_and_layer_time_of_mixtral_on_an_a100_over_pcie4():
    """Numbers worked out by hand from Mixtral-8x7B's published shape (bf16) and the profile's nominal rates
    (25 GB/s PCIe 4.0, 0.8 x 1.94 TB/s HBM, 0.6 x 312 TFLOP/s)."""
    profile, shape = get_profile("pcie4-x16"), get_shape("mixtral-8x7b")
    # one expert: 3 x 4096 x 14336 bf16 = 352,321,536 B -> 14.09 ms + 10 us launch
    assert profile.copy_time(352_321_536) == pytest.approx(14.103e-3, rel=1e-3)
    # batch-1 decode reads the attention (4096^2 x 2 + 4096 x 1024 x 2), the router (4096 x 8) and 2 experts:
    # 788.6 MB at 1.552 TB/s = 0.508 ms, so one demand copy stalls for as long as ~28 decode layers compute
    decode = profile.layer_time(shape, num_tokens=1, num_active_experts=2)
    assert decode == pytest.approx(0.5081e-3, rel=1e-3)
    assert 27 < profile.copy_time(shape.expert_bytes) / decode < 29
    # 16 decode tokens read the same weights: small batches are free (memory-bound)
    assert profile.layer_time(shape, num_tokens=16, num_active_experts=2) == decode
    # a 4096-token prompt: 4096 x 2 x (41,975,808 + 2 x 176,160,768) FLOPs at 187.2 TFLOP/s = 17.25 ms
    assert profile.layer_time(shape, num_tokens=4096, num_active_experts=8) == pytest.approx(17.255e-3, rel=1e-3)
    # over NVLink-C2C the same expert copies 16x faster (0.89 ms)
    assert get_profile("gh200-c2c").copy_time(352_321_536) == pytest.approx(0.8858e-3, rel=1e-3)


@pytest.mark.parametrize("config, preset", [(MIXTRAL_CONFIG, "mixtral-8x7b"), (OLMOE_CONFIG, "olmoe-1b-7b")])
def test_shape_from_config_matches_preset(config, preset):
    shape = ModelShape.from_config(config)
    ref = get_shape(preset)
    assert (shape.num_layers, shape.num_experts, shape.top_k) == (ref.num_layers, ref.num_experts, ref.top_k)
    assert shape.expert_bytes == ref.expert_bytes
    assert shape.dense_params == ref.dense_params


def test_shape_sizes():
    mixtral = SHAPES["mixtral-8x7b"]
    assert mixtral.expert_bytes == 3 * 4096 * 14336 * 2  # ~352 MB in bf16
    assert 44e9 < mixtral.total_expert_bytes / 2 < 46e9  # ~45B expert parameters of Mixtral's 46.7B
    olmoe = SHAPES["olmoe-1b-7b"]
    assert 6.3e9 < olmoe.total_expert_bytes / 2 < 6.5e9  # ~6.4B of OLMoE's 6.9B parameters are experts


def test_shape_errors():
    with pytest.raises(ValueError, match="num_experts"):
        ModelShape.from_config({"hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 4})
    with pytest.raises(ValueError, match="Did you mean"):
        get_shape("mixtral-8x7")
