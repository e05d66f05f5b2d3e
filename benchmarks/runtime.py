"""TTFT and TPOT of offloaded generation vs on-demand loading vs the whole model on the GPU (needs CUDA).

    python benchmarks/runtime.py                      # OLMoE-1B-7B shapes, 16 layers, 5% capacity
    python benchmarks/runtime.py --layers 4 --new-tokens 32 --out outputs/benchmarks/runtime.json

The model has OLMoE-1B-7B's shapes (hidden 2048, 64 experts of intermediate 1024, top-8, vocab 50304) and
random weights, in bf16; `--layers` reduces the decoder depth. Three variants run on the same weights (built
on the GPU from one seed each time), each on the same random prompt after a warm-up on another one:
  gpu        the whole model on the GPU (the lower bound);
  offloaded  runtime.offload(capacity, eviction="least-stale-predicted", prefetch router reuse or --predictors);
  on-demand  runtime.offload(capacity, eviction="lru", prefetch="none"): every miss is fetched when needed.
TTFT = prefill of the prompt to the first token; TPOT = mean time per later token (greedy, batch 1, KV cache).
Results (with the device name, the cache counters and the config) are printed and written atomically as JSON.
Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from specmd_predict.io import atomic_write_text  # noqa: E402

VARIANTS = ("gpu", "offloaded", "on-demand")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=16, help="decoder layers (OLMoE-1B-7B has 16)")
    parser.add_argument("--capacity", type=float, default=0.05, help="device cache as a fraction of all expert bytes")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (prefill)")
    parser.add_argument("--new-tokens", type=int, default=64, help="generated tokens (1 prefill + the rest decode)")
    parser.add_argument("--warmup-tokens", type=int, default=8, help="tokens generated once before measuring")
    parser.add_argument("--predictors", default=None, help="bank for the offloaded variant (default: router reuse)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {','.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and prompts")
    parser.add_argument("--out", default="outputs/benchmarks/runtime.json", help="where the JSON results go")
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.layers < 2 or args.prompt_tokens < 1 or args.new_tokens < 2:
        parser.error("need --layers >= 2, --prompt-tokens >= 1 and --new-tokens >= 2")
    return args


def olmoe_1b_7b_config(num_layers: int):
    """OLMoE-1B-7B's shapes (allenai/OLMoE-1B-7B-0924 config.json) with `num_layers` decoder layers."""
    from transformers import OlmoeConfig

    return OlmoeConfig(
        vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=num_layers,
        num_attention_heads=16, num_key_value_heads=16, num_experts=64, num_experts_per_tok=8,
        max_position_embeddings=4096, rope_theta=10000.0, clip_qkv=None, norm_topk_prob=False,
        eos_token_id=None, pad_token_id=1,
    )


def build_model(config, seed: int, device: torch.device) -> torch.nn.Module:
    """Random bf16 weights, initialized on `device` (fast), identical for the same seed and device."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with device:  # parameters are created and initialized on the device
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


@torch.inference_mode()
def time_generation(model, prompt_ids: torch.Tensor, new_tokens: int) -> dict:
    """Greedy decoding with a KV cache; seconds to the first token and per later token."""
    from transformers import DynamicCache

    device = prompt_ids.device
    cache = DynamicCache(config=model.config)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    logits = model(input_ids=prompt_ids, cache=cache, use_cache=True).logits
    token = logits[:, -1].argmax(dim=-1, keepdim=True)
    torch.cuda.synchronize(device)
    ttft = time.perf_counter() - start
    tokens, step_times = [token.item()], []
    for _ in range(new_tokens - 1):
        start = time.perf_counter()
        logits = model(input_ids=token, cache=cache, use_cache=True).logits
        token = logits[:, -1].argmax(dim=-1, keepdim=True)
        torch.cuda.synchronize(device)
        step_times.append(time.perf_counter() - start)
        tokens.append(token.item())
    return {
        "ttft_s": ttft,
        "tpot_s": statistics.mean(step_times),
        "tpot_median_s": statistics.median(step_times),
        "tokens": tokens,
    }


def run_variant(name: str, args: argparse.Namespace, config, prompts: tuple[torch.Tensor, torch.Tensor]) -> dict:
    import runtime

    device = prompts[0].device
    model = build_model(config, args.seed, device)
    if name == "offloaded":
        runtime.offload(model, predictors=args.predictors, capacity=args.capacity, device=device)
    elif name == "on-demand":
        runtime.offload(model, capacity=args.capacity, eviction="lru", prefetch="none", device=device)
    warmup, measured = prompts
    time_generation(model, warmup, max(2, args.warmup_tokens))
    if name != "gpu":
        runtime.reset_offload_stats(model)
    torch.cuda.reset_peak_memory_stats(device)
    result = {"variant": name, **time_generation(model, measured, args.new_tokens)}
    result["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    if name != "gpu":
        stats = runtime.offload_stats(model)
        print(stats)
        result["cache"] = {k: v for k, v in stats.as_dict().items() if k != "layers"}
    del model
    torch.cuda.empty_cache()
    return result


def write_atomically(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/runtime.py measures GPU offloading and needs a CUDA GPU; none is available, nothing measured")
        return 0
    from rich.console import Console
    from rich.table import Table

    device = torch.device("cuda", torch.cuda.current_device())
    config = olmoe_1b_7b_config(args.layers)
    generator = torch.Generator().manual_seed(args.seed)
    prompts = tuple(
        torch.randint(2, config.vocab_size, (1, args.prompt_tokens), generator=generator).to(device) for _ in range(2)
    )
    results = []
    for name in args.variants.split(","):
        print(f"running {name} ...", flush=True)
        results.append(run_variant(name, args, config, prompts))
    reference = next((r["tokens"] for r in results if r["variant"] == "gpu"), None)
    title = f"OLMoE-1B-7B shapes, {args.layers} layers, random bf16 weights, on {torch.cuda.get_device_name()}"
    table = Table(title=title)
    for column in ("variant", "TTFT ms", "TPOT ms", "hit rate", "stall ms", "GB moved", "peak GPU GB", "same tokens"):
        table.add_column(column, justify="right")
    for r in results:
        cache = r.get("cache", {})
        table.add_row(
            r["variant"], f"{r['ttft_s'] * 1e3:.1f}", f"{r['tpot_s'] * 1e3:.2f}",
            f"{cache['hit_rate']:.1%}" if cache else "-", f"{cache['stall_s'] * 1e3:.0f}" if cache else "-",
            f"{cache['bytes_moved'] / 1e9:.2f}" if cache else "-", f"{r['peak_gpu_memory_bytes'] / 1e9:.1f}",
            "-" if reference is None else str(r["tokens"] == reference),
        )
    Console().print(table)
    payload = {
        "device": torch.cuda.get_device_name(),
        "config": vars(args),
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
        "results": results,
    }
    write_atomically(Path(args.out), payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
