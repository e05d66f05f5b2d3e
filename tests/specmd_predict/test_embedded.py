"""The embedded default model: the size targets hold, it loads offline, and its routing is learned."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specmd_predict.adapters import get_adapter
from specmd_predict.capture import record_routing
from specmd_predict.embedded import EMBEDDED_MODEL_DIR, load_embedded_model
from specmd_predict.embedded_corpus import iter_corpus_texts


@pytest.fixture(scope="module")
def embedded():
    return load_embedded_model()


def test_size_targets(embedded):
    model, _ = embedded
    adapter = get_adapter(model)
    assert adapter.model_type == "olmoe"
    assert adapter.num_layers >= 8 and adapter.num_experts >= 32 and adapter.top_k >= 4
    assert (EMBEDDED_MODEL_DIR / "model.safetensors").stat().st_size <= 20 * 2**20
    assert (EMBEDDED_MODEL_DIR / "README.md").exists()


def test_loads_from_folder_with_auto_classes():
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR)
    ids = tokenizer("import os\nprint(os.getcwd())\n", return_tensors="pt")["input_ids"]
    assert tokenizer.decode(ids[0]) == "import os\nprint(os.getcwd())\n"
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_routing_is_learned(embedded):
    """On held-out stdlib code: loss far below the unigram baseline, routers far from uniform."""
    model, tokenizer = embedded
    stats = json.loads((EMBEDDED_MODEL_DIR / "training_stats.json").read_text())
    texts = list(itertools.islice(iter_corpus_texts("validation"), 4))
    ids = torch.stack([tokenizer(t, return_tensors="pt")["input_ids"][0, :128] for t in texts])
    adapter = get_adapter(model)
    with torch.no_grad(), record_routing(adapter, keep_inputs=False, keep_logits=True) as record:
        loss = model(ids, labels=ids).loss.item()
    assert loss < stats["unigram_loss"] - 1.0
    uniform = math.log(adapter.num_experts)
    for layer in range(adapter.num_layers):
        probs_TE = record.routings[layer][0].logits_TE.float().softmax(-1)
        token_entropy = -(probs_TE * probs_TE.clamp_min(1e-12).log()).sum(-1).mean().item()
        assert token_entropy < 0.8 * uniform, f"layer {layer} routing is close to uniform"
