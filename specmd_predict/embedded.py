"""The embedded default model: a tiny OLMoE shipped inside the package (see its README.md).

    from specmd_predict.embedded import load_embedded_model
    model, tokenizer = load_embedded_model()

It loads through the same `from_pretrained` path a hub id takes, from a local folder, with no network.
The recipe that rebuilds it is `scripts/build_embedded_model.py`; `train_tokenizer(texts, vocab_size)` is its
tokenizer's (byte-level BPE), which the tests' tiny tokenizers follow on a few files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent / "embedded_model"
EMBEDDED_MODEL_NAME = "embedded"  # what CLIs accept in place of a hub id or folder
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]  # end of text (also the start), padding


def load_embedded_model(dtype=None, device: str = "cpu"):
    """Return `(model, tokenizer)` of the embedded default model, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (EMBEDDED_MODEL_DIR / "config.json").exists():
        raise FileNotFoundError(
            f"embedded model missing at {EMBEDDED_MODEL_DIR}; rebuild it with scripts/build_embedded_model.py"
        )
    model = AutoModelForCausalLM.from_pretrained(
        EMBEDDED_MODEL_DIR, dtype=dtype or torch.float32, trust_remote_code=False
    )
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR, trust_remote_code=False)
    return model.to(device).eval(), tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (every byte encodable, no unknown token) of `vocab_size` tokens trained on
    `texts`, as a `PreTrainedTokenizerFast` with the `SPECIAL_TOKENS` as eos/bos and pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    end, pad = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=end, bos_token=end, pad_token=pad)
