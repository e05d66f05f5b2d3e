"""Every routed-MoE causal-LM family the installed transformers ships is supported or excluded with a reason.

The list is not written by hand: every model type with a causal-LM class whose (text) config declares a number of
routed experts. A new transformers release that adds a family fails this test until the family gets an adapter
(tested in test_adapters.py against its own routers) or an entry in EXCLUDED_MODEL_TYPES saying why not.
"""

from __future__ import annotations

import functools

import pytest
import torch
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from specmd_predict.adapters import ADAPTERS, EXCLUDED_MODEL_TYPES, UnsupportedModelError, get_adapter

EXPERT_COUNT_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
# causal-LM types whose default config does not construct; checked by hand: none of them is a routed MoE
UNCONSTRUCTIBLE = {"gemma4_assistant", "musicgen", "musicgen_melody"}


def declares_routed_experts(settings: dict) -> bool:
    """An expert-count field at the top level or in a nested block (DBRX keeps it in `ffn_config`)."""
    nested = [v for v in settings.values() if isinstance(v, dict)]
    return any(name in part for part in (settings, *nested) for name in EXPERT_COUNT_FIELDS)


@functools.cache
def routed_moe_model_types() -> dict[str, str]:
    """{text config model_type: causal-LM model_type} for every routed-MoE family in transformers."""
    found, failed = {}, set()
    for model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        try:
            text_config = CONFIG_MAPPING[model_type]().get_text_config()
        except Exception:  # noqa: BLE001 - any failure: the set is compared with UNCONSTRUCTIBLE below
            failed.add(model_type)
            continue
        if declares_routed_experts(text_config.to_dict()):
            found[text_config.model_type] = model_type
    assert failed == UNCONSTRUCTIBLE, "a causal-LM config no longer constructs (or now does): check it by hand"
    return found


def test_every_routed_moe_family_is_supported_or_excluded_with_a_reason():
    families = routed_moe_model_types()
    assert len(families) > 50  # the enumeration really finds transformers' MoE families
    assert {"mixtral", "olmoe", "deepseek_v3", "dbrx", "deepseek_v4"} <= set(families)
    unknown = sorted(set(families) - set(ADAPTERS) - set(EXCLUDED_MODEL_TYPES))
    assert not unknown, f"routed-MoE families with neither an adapter nor a reason: {unknown}"
    assert not set(ADAPTERS) & set(EXCLUDED_MODEL_TYPES)
    assert all(len(reason) > 40 for reason in EXCLUDED_MODEL_TYPES.values())
    stale = sorted(set(EXCLUDED_MODEL_TYPES) - set(families))
    assert not stale, f"excluded types transformers no longer ships: {stale}"


@pytest.mark.parametrize("model_type", sorted(EXCLUDED_MODEL_TYPES))
def test_excluded_family_error_gives_the_reason(model_type):
    class Stub(torch.nn.Module):  # get_adapter decides on the config alone; no need to build the model
        config = CONFIG_MAPPING[routed_moe_model_types()[model_type]]()

    with pytest.raises(UnsupportedModelError) as err:
        get_adapter(Stub())
    assert EXCLUDED_MODEL_TYPES[model_type] in str(err.value) and repr(model_type) in str(err.value)


@pytest.mark.parametrize("model_type", ["longcat_flash", "inkling2_loop_text"])
def test_a_harvest_refuses_an_excluded_or_unharvestable_family_with_the_reason_before_loading_weights(
    model_type, tmp_path
):
    """Only the config is read (no weights in the folder): the one-line error names the family and says why."""
    from data_pipelines import HarvestConfig, HarvestError
    from data_pipelines.model import check_model_config

    CONFIG_MAPPING[routed_moe_model_types()[model_type]]().save_pretrained(tmp_path)
    reason = EXCLUDED_MODEL_TYPES.get(model_type) or ADAPTERS[model_type].harvest_refusal
    with pytest.raises(HarvestError) as err:
        check_model_config(HarvestConfig(model=str(tmp_path), dataset="unused"))
    assert model_type in str(err.value)
    assert reason in str(err.value)
