"""A tiny harvest for the training tests, built from a tiny random OLMoE in the harvest contract's format."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Array2D, Dataset, Features, Value
from transformers import AutoModelForCausalLM, OlmoeConfig

from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing

NUM_SEQUENCES, SEQ_LEN = 24, 32
TINY = dict(
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=8,
    num_experts=8,
    num_experts_per_tok=2,
    eos_token_id=None,
    pad_token_id=None,
    bos_token_id=None,
)


def build_tiny_harvest(path, keep_logits: bool = True):
    """(model, harvest) where harvest has .dataset/.train/.validation/.manifest like data_pipelines' Harvest."""
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(OlmoeConfig(**TINY)).save_pretrained(path / "model")
    model = AutoModelForCausalLM.from_pretrained(path / "model").eval()
    adapter = get_adapter(model)
    L, K, E, D = adapter.num_layers, adapter.top_k, adapter.num_experts, adapter.hidden_size
    input_ids = torch.randint(
        0, TINY["vocab_size"], (NUM_SEQUENCES, SEQ_LEN), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad(), record_routing(adapter, keep_logits=True) as record:
        model(input_ids)
    hidden_NLD = torch.stack([record.inputs[l][0] for l in range(L)], dim=1)
    ids_NLK = torch.stack([record.routings[l][0].expert_ids_TK for l in range(L)], dim=1)
    weights_NLK = torch.stack([record.routings[l][0].weights_TK for l in range(L)], dim=1)
    logits_NLE = torch.stack([record.routings[l][0].logits_TE for l in range(L)], dim=1)
    columns = {
        "sequence_id": np.repeat(np.arange(NUM_SEQUENCES, dtype=np.int32), SEQ_LEN),
        "position": np.tile(np.arange(SEQ_LEN, dtype=np.int32), NUM_SEQUENCES),
        "token_id": input_ids.flatten().numpy().astype(np.int32),
        "is_prompt": np.tile(np.arange(SEQ_LEN) < 8, NUM_SEQUENCES),
        "expert_ids": ids_NLK.numpy().astype(np.int16),
        "expert_weights": weights_NLK.numpy().astype(np.float16),
        "hidden": hidden_NLD.numpy().astype(np.float16),
    }
    features = {
        "sequence_id": Value("int32"),
        "position": Value("int32"),
        "token_id": Value("int32"),
        "is_prompt": Value("bool"),
        "expert_ids": Array2D((L, K), "int16"),
        "expert_weights": Array2D((L, K), "float16"),
        "hidden": Array2D((L, D), "float16"),
    }
    if keep_logits:
        columns["router_logits"] = logits_NLE.numpy().astype(np.float16)
        features["router_logits"] = Array2D((L, E), "float16")
    Dataset.from_dict(columns, features=Features(features)).save_to_disk(str(path / "data"))
    from datasets import load_from_disk

    dataset = load_from_disk(str(path / "data"))
    validation_ids = [0, 1, 2, 3, 4, 5]
    manifest = {
        "format_version": 1,
        "model": adapter.identity() | {"name_or_path": str(path / "model"), "revision": None, "dtype": "float32"},
        "num_tokens": NUM_SEQUENCES * SEQ_LEN,
        "num_sequences": NUM_SEQUENCES,
        "hidden_layers": list(range(L)),
        "prompt_tokens": [8] * NUM_SEQUENCES,
        "validation_sequence_ids": validation_ids,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    is_val = np.isin(np.asarray(dataset["sequence_id"]), validation_ids)
    harvest = SimpleNamespace(
        path=path,
        dataset=dataset,
        manifest=manifest,
        train=dataset.select(np.flatnonzero(~is_val)),
        validation=dataset.select(np.flatnonzero(is_val)),
    )
    return model, harvest


@pytest.fixture(scope="session")
def tiny_harvest(tmp_path_factory):
    return build_tiny_harvest(tmp_path_factory.mktemp("harvest"))
