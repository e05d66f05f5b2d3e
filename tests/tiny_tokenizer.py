"""A tiny byte-level BPE tokenizer trained on a few embedded-corpus files, for tests' tiny local models.

from tests.tiny_tokenizer import build_tiny_tokenizer
tokenizer = build_tiny_tokenizer(vocab_size=312, num_texts=3)
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from specmd_predict.embedded_corpus import iter_corpus_texts


def build_tiny_tokenizer(vocab_size: int, num_texts: int) -> PreTrainedTokenizerFast:
    """Seeded by the corpus itself: the first `num_texts` validation files, so every run trains the same one."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = iter_corpus_texts("validation")
    tok.train_from_iterator((next(texts) for _ in range(num_texts)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>"
    )
