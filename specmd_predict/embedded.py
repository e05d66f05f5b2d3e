"""The embedded default model: a tiny OLMoE shipped inside the package (see its README.md).

    from specmd_predict.embedded import load_embedded_model
    model, tokenizer = load_embedded_model()

It loads through the same `from_pretrained` path a hub id takes, from a local folder, with no network.
The recipe that rebuilds it is `scripts/build_embedded_model.py`.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent / "embedded_model"
EMBEDDED_MODEL_NAME = "embedded"  # what CLIs accept in place of a hub id or folder


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
