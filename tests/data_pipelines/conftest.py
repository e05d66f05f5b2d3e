"""Tiny locally-built MoE models (with a tiny byte-level BPE tokenizer) for the harvest tests.

`tiny_model_dir(family)` saves a seeded random model of `family` and the tokenizer into a folder and
returns it: harvests load it through `from_pretrained` like a hub id. `interrupted(owner, name)` kills a harvest
mid-way (a KeyboardInterrupt at a method's second call).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from specmd_predict.adapters import ADAPTERS
from specmd_predict.embedded_corpus import iter_corpus_texts
from tests.tiny_models import save_tiny_model
from tests.tiny_tokenizer import build_tiny_tokenizer

torch.set_num_threads(1)  # tiny models gain nothing from threads, and the shared 2-core machine is busy

VOCAB = 320
# the harvest's variants of the shared tiny families: the tiny tokenizer's vocab, a short context, untied heads
HARVEST_SHAPE = dict(vocab_size=VOCAB, max_position_embeddings=64, tie_word_embeddings=False)
FAMILY_OVERRIDES = {"qwen2_moe": dict(decoder_sparse_step=1, mlp_only_layers=[])}


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
            overrides = HARVEST_SHAPE | FAMILY_OVERRIDES.get(family, {})
            built[family] = save_tiny_model(family, folder, tiny_tokenizer, **overrides)
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


@contextmanager
def _interrupted(owner: type, name: str, at_call: int = 2) -> Iterator[dict]:
    """Inside the block, `owner.name` raises KeyboardInterrupt at its `at_call`-th call (the earlier calls run for
    real): a harvest killed between batches. Yields the call count, `calls["n"]`; the real method is back after."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(owner, name, interrupt)
        yield calls


@pytest.fixture
def interrupted():
    """`with interrupted(BatchRecorder, "record") as calls:` (see `_interrupted`)."""
    return _interrupted
