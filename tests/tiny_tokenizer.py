"""A tiny byte-level BPE tokenizer trained on a few embedded-corpus files, for tests' tiny local models.

from tests.tiny_tokenizer import build_tiny_tokenizer
tokenizer = build_tiny_tokenizer(vocab_size=312, num_texts=3)
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from specmd_predict.embedded import train_tokenizer
from specmd_predict.embedded_corpus import iter_corpus_texts


def build_tiny_tokenizer(vocab_size: int, num_texts: int) -> PreTrainedTokenizerFast:
    """The embedded model's tokenizer recipe, seeded by the corpus itself: trained on the first `num_texts`
    validation files, so every run trains the same one."""
    texts = iter_corpus_texts("validation")
    return train_tokenizer((next(texts) for _ in range(num_texts)), vocab_size)
