"""A tiny harvest for the training tests: a seeded random tiny OLMoE (with a tiny byte-level BPE tokenizer)
harvested by data_pipelines over the embedded corpus, router logits kept."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from data_pipelines import HarvestConfig, harvest, load_harvest
from tests.tiny_models import NARROW_OLMOE, save_tiny_model
from tests.tiny_tokenizer import build_tiny_tokenizer

torch.set_num_threads(1)  # tiny models gain nothing from threads, and the shared 2-core machine is busy

VOCAB = 320
# the shared tiny OLMoE, narrower and one layer deeper: 3 source layers for horizons 1 and 2
TINY = NARROW_OLMOE | dict(vocab_size=VOCAB, num_hidden_layers=4, max_position_embeddings=64)


def build_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer(vocab_size=VOCAB - 8, num_texts=3)


def build_tiny_harvest(path):
    """(model, harvest): the model as loaded from its folder, and the opened data_pipelines Harvest."""
    model_dir = save_tiny_model("olmoe", path / "model", build_tokenizer(), **TINY)
    config = HarvestConfig(
        model=str(model_dir),
        seq_len=32,
        max_tokens=32 * 24,
        validation_fraction=0.25,
        keep_router_logits=True,
        device="cpu",
        output_dir=str(path / "harvest"),
        progress=False,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return model, load_harvest(harvest(config))


@pytest.fixture(scope="session")
def tiny_harvest(tmp_path_factory):
    return build_tiny_harvest(tmp_path_factory.mktemp("tiny"))
