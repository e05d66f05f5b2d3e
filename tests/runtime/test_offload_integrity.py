"""runtime.offload never uses a damaged predictor bank: one flipped weight byte is a one-line BankError that
names the file, raised before the model is touched."""

from __future__ import annotations

import pytest
from tiny_moe import tiny_model

import runtime
from runtime.offload import ENGINE_ATTR
from specmd_predict.adapters import get_adapter
from specmd_predict.predictors import BankError, make_predictor, save_bank


def test_offload_refuses_a_bank_with_a_flipped_weight_byte(tmp_path):
    model = tiny_model("olmoe")
    bank_dir = save_bank(make_predictor("linear", adapter=get_adapter(model), horizon=2), tmp_path / "bank")
    weights = bank_dir / "predictors.safetensors"
    data = bytearray(weights.read_bytes())
    data[-2] ^= 0x40  # inside the last float: safetensors itself would load it silently
    weights.write_bytes(bytes(data))
    with pytest.raises(BankError, match=r"predictors\.safetensors does not match its recorded checksum") as info:
        runtime.offload(model, predictors=bank_dir, capacity=0.5)
    assert "\n" not in str(info.value)
    assert getattr(model, ENGINE_ATTR, None) is None  # the model was left as it was
