"""Generate text with a MoE model whose experts are offloaded, and print the cache's counters.

    python examples/generate.py                                   # embedded model, router reuse
    python examples/generate.py --predictors outputs/banks/embedded-residual --capacity 0.1
    python examples/generate.py --model path/to/OLMoE-1B-7B --capacity 0.05 --prompt "def main("

The model (default: the embedded tiny OLMoE; or a local folder / hub id) is loaded as usual, handed to
`runtime.offload` with a predictor bank (default: none, so router reuse), and then used through the plain
`generate` API. Expert weights stay in host memory; a `--capacity` share of them is cached on the device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Generate with expert offloading and print the cache stats.")
    parser.add_argument("--model", default="embedded", help="'embedded' (default), a local model folder or a hub id")
    parser.add_argument("--predictors", default=None, help="predictor bank directory (default: router reuse)")
    parser.add_argument("--capacity", type=float, default=0.25, help="device cache: fraction of all expert bytes")
    parser.add_argument(
        "--eviction", default=None, help="eviction policy name (runtime.policies; default: the runtime's default)"
    )
    parser.add_argument("--prefetch", default=None, help="prefetch policy name (default: predictor / router-reuse)")
    parser.add_argument("--device", default=None, help="compute device (default: cuda if available, else cpu)")
    parser.add_argument("--prompt", default="def fibonacci(n):\n    ", help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens to generate (greedy)")
    return parser.parse_args(argv)


def load(model_name: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specmd_predict.embedded import EMBEDDED_MODEL_NAME, load_embedded_model

    if model_name == EMBEDDED_MODEL_NAME:
        return load_embedded_model()
    # trust_remote_code=False: never run a model folder's own code (transformers' built-in types only)
    model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch.bfloat16, trust_remote_code=False).eval()
    return model, AutoTokenizer.from_pretrained(model_name, trust_remote_code=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    import runtime
    from runtime.offload import DEFAULT_EVICTION

    model, tokenizer = load(args.model)
    try:
        runtime.offload(
            model,
            predictors=args.predictors,
            capacity=args.capacity,
            eviction=args.eviction or DEFAULT_EVICTION,
            prefetch=args.prefetch,
            device=args.device,
        )
    except (ValueError, TypeError) as err:  # bad capacity, a bank for another model, an unknown policy ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = model.get_input_embeddings().weight.device
    inputs = tokenizer(args.prompt, return_tensors="pt").to(device)
    with torch.inference_mode():
        output_ids = model.generate(
            **inputs, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    print(tokenizer.decode(output_ids[0], skip_special_tokens=True))
    print(runtime.offload_stats(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
