"""TTFT and TPOT of offloaded generation vs on-demand loading vs the whole model on one device.

    python benchmarks/runtime.py --sweep                    # the one-command GPU check (< 8 min on an H100/H200)
    python benchmarks/runtime.py --capacity 0.25 --layers 4 # one capacity on the GPU
    python benchmarks/runtime.py --device cpu               # the runtime's own host overhead, no GPU needed

GPU (default `--device cuda`): a model with OLMoE-1B-7B's shapes (hidden 2048, 64 experts of intermediate
1024, top-8, vocab 50304) and random bf16 weights; `--layers` sets the decoder depth. Variants, each on the
same weights (built on the GPU from one seed every time) and the same random prompt after a warm-up on another:
  gpu        the whole model on the GPU (the lower bound);
  on-demand  runtime.offload(capacity, eviction="lru", prefetch="none"): every miss is fetched when needed;
  offloaded  runtime.offload(capacity, eviction=--eviction, router-reuse prefetch --horizon layers ahead);
  bank       the same with --predictors (only when given).
`--sweep` first runs the GPU tests (pytest -m gpu tests/runtime), measures pinned host-to-device bandwidth,
then benchmarks capacities 5%, 10%, 25% and 90%. Each offloaded row gets a copy-bound floor: the larger of
the all-on-GPU TPOT and the bytes its demand misses moved per decode token over the measured bandwidth.

CPU (`--device cpu`): the embedded model at capacity 1.0 (every expert fits: nothing but the runtime's own
work differs), plain vs offloaded (router reuse) vs on-demand, alternated `--repeats` times on the shared
cores; the ratio offloaded / plain TPOT is the runtime's host overhead (target <= 1.15).

TTFT = prefill of the prompt to the first token; TPOT = median time per later token (greedy, batch 1, KV
cache); cache counters are those of the decode steps. Printed as one table and written atomically as JSON
with the device, versions and config. Without CUDA and without `--device cpu` it says so and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from specmd_predict.io import atomic_write_text  # noqa: E402

VARIANTS = ("gpu", "on-demand", "offloaded", "bank")
SWEEP_CAPACITIES = (0.05, 0.10, 0.25, 0.90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--sweep", action="store_true", help="GPU tests, bandwidth, capacities 5/10/25/90%%")
    parser.add_argument("--layers", type=int, default=16, help="decoder layers on the GPU (OLMoE-1B-7B has 16)")
    parser.add_argument("--capacity", type=float, default=None, help="device cache, fraction of expert bytes")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (prefill)")
    parser.add_argument("--new-tokens", type=int, default=64, help="generated tokens (1 prefill + the rest decode)")
    parser.add_argument("--warmup-tokens", type=int, default=8, help="tokens generated once before measuring")
    parser.add_argument("--repeats", type=int, default=5, help="CPU: plain/offloaded alternations (median)")
    parser.add_argument("--eviction", default="least-stale-predicted", help="eviction policy of the offloaded rows")
    parser.add_argument("--horizon", type=int, default=1, help="router-reuse layers ahead for the offloaded rows")
    parser.add_argument("--predictors", default=None, help="a predictor bank: adds the 'bank' variant")
    parser.add_argument("--variants", default=None, help=f"comma-separated, of {','.join(VARIANTS)} (default: all)")
    parser.add_argument("--skip-tests", action="store_true", help="--sweep without running the GPU tests first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and prompts")
    parser.add_argument("--out", default="outputs/benchmarks/runtime.json", help="where the JSON results go")
    args = parser.parse_args(argv)
    variants = args.variants.split(",") if args.variants else [v for v in VARIANTS if v != "bank" or args.predictors]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if "bank" in variants and not args.predictors:
        parser.error("the 'bank' variant needs --predictors BANK_DIR")
    args.variants = variants
    if args.layers < 2 or args.prompt_tokens < 1 or args.new_tokens < 2 or args.repeats < 1 or args.horizon < 1:
        parser.error("need --layers >= 2, --prompt-tokens >= 1, --new-tokens >= 2, --repeats >= 1, --horizon >= 1")
    if args.capacity is not None and not 0.0 < args.capacity <= 1.0:
        parser.error(f"--capacity is a fraction of all expert bytes in (0, 1], got {args.capacity}")
    if args.sweep and args.device == "cpu":
        parser.error("--sweep is the GPU check; on CPU run --device cpu alone")
    return args


# ---- models -------------------------------------------------------------------------------------------------
def olmoe_1b_7b_config(num_layers: int):
    """OLMoE-1B-7B's shapes (allenai/OLMoE-1B-7B-0924 config.json) with `num_layers` decoder layers."""
    from transformers import OlmoeConfig

    return OlmoeConfig(
        vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=num_layers,
        num_attention_heads=16, num_key_value_heads=16, num_experts=64, num_experts_per_tok=8,
        max_position_embeddings=4096, rope_theta=10000.0, clip_qkv=None, norm_topk_prob=False,
        eos_token_id=None, pad_token_id=1,
    )  # fmt: skip


def build_model(config, seed: int, device: torch.device) -> torch.nn.Module:
    """Random bf16 weights, initialized on `device` (fast), identical for the same seed and device."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with device:  # parameters are created and initialized on the device
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


def offload_variant(model, name: str, args: argparse.Namespace, capacity: float, device: torch.device):
    import runtime

    if name == "on-demand":
        return runtime.offload(model, capacity=capacity, eviction="lru", prefetch="none", device=device)
    if name == "offloaded":
        return runtime.offload(
            model, capacity=capacity, eviction=args.eviction, prefetch="router-reuse", horizon=args.horizon,
            device=device,
        )  # fmt: skip
    if name == "bank":
        return runtime.offload(
            model, predictors=args.predictors, capacity=capacity, eviction=args.eviction, device=device
        )
    return model


# ---- timing -------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_generation(model, prompt_ids: torch.Tensor, new_tokens: int, reset_after_prefill: bool = False) -> dict:
    """Greedy decoding with a KV cache; seconds to the first token and per later token (the next token stays
    on the device; the tokens are read back once at the end)."""
    from transformers import DynamicCache

    import runtime

    device = prompt_ids.device
    cache = DynamicCache(config=model.config)
    _sync(device)
    start = time.perf_counter()
    token = model(input_ids=prompt_ids, cache=cache, use_cache=True).logits[:, -1].argmax(dim=-1, keepdim=True)
    _sync(device)
    ttft = time.perf_counter() - start
    if reset_after_prefill:
        runtime.reset_offload_stats(model)  # the counters below are the decode steps'
    tokens, step_times = [token], []
    for _ in range(new_tokens - 1):
        start = time.perf_counter()
        token = model(input_ids=token, cache=cache, use_cache=True).logits[:, -1].argmax(dim=-1, keepdim=True)
        _sync(device)
        step_times.append(time.perf_counter() - start)
        tokens.append(token)
    return {
        "ttft_s": ttft,
        "tpot_s": statistics.median(step_times),
        "tpot_mean_s": statistics.mean(step_times),
        "tokens": torch.cat(tokens, dim=-1).flatten().tolist(),
    }


def decode_cache_stats(model, decode_tokens: int) -> dict:
    import runtime

    stats = runtime.offload_stats(model)
    out = {k: v for k, v in stats.as_dict().items() if k != "layers"}
    out["miss_bytes_per_token"] = stats.misses * stats.expert_bytes / decode_tokens
    out["host_reads_per_token"] = stats.host_reads / decode_tokens
    return out


def measure_bandwidth(device: torch.device, num_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Pinned host -> device copy bandwidth in bytes/s (best of `repeats`, timed with CUDA events)."""
    host = torch.empty(num_bytes, dtype=torch.uint8, pin_memory=True)
    dest = torch.empty(num_bytes, dtype=torch.uint8, device=device)
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dest.copy_(host, non_blocking=True)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return num_bytes / best


def run_gpu_tests() -> dict:
    """`pytest -m gpu tests/runtime`: its exit code and last line go into the results."""
    print("running the GPU tests: pytest -m gpu tests/runtime ...", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/runtime"], cwd=ROOT, capture_output=True, text=True
    )
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    print(f"GPU tests: {last} (exit {proc.returncode})", flush=True)
    return {"exit_code": proc.returncode, "summary": last}


# ---- the two modes ------------------------------------------------------------------------------------------
def gpu_rows(args: argparse.Namespace, device: torch.device, bandwidth: float | None) -> list[dict]:
    config = olmoe_1b_7b_config(args.layers)
    generator = torch.Generator().manual_seed(args.seed)
    warmup, measured = (
        torch.randint(2, config.vocab_size, (1, args.prompt_tokens), generator=generator).to(device) for _ in range(2)
    )
    capacities = SWEEP_CAPACITIES if args.sweep else (args.capacity if args.capacity is not None else 0.05,)
    rows = []
    gpu_tpot = None
    if "gpu" in args.variants:
        rows.append(run_one("gpu", None, args, config, device, warmup, measured))
        gpu_tpot = rows[-1]["tpot_s"]
    for capacity in capacities:
        for name in args.variants:
            if name == "gpu":
                continue
            row = run_one(name, capacity, args, config, device, warmup, measured)
            if bandwidth:
                copy_s = row["cache"]["miss_bytes_per_token"] / bandwidth
                row["copy_bound_floor_s"] = max(gpu_tpot or 0.0, copy_s)
            rows.append(row)
    return rows


def run_one(name, capacity, args, config, device, warmup, measured) -> dict:
    print(f"running {name}" + (f" at {capacity:.0%}" if capacity else "") + " ...", flush=True)
    model = offload_variant(build_model(config, args.seed, device), name, args, capacity, device)
    time_generation(model, warmup, max(2, args.warmup_tokens))
    torch.cuda.reset_peak_memory_stats(device)
    row = {"variant": name, "capacity": capacity}
    row.update(time_generation(model, measured, args.new_tokens, reset_after_prefill=name != "gpu"))
    row["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    if name != "gpu":
        row["cache"] = decode_cache_stats(model, args.new_tokens - 1)
    del model
    gc.collect()  # an offloaded model is a reference cycle (its experts hold the engine's runners): free it now
    torch.cuda.empty_cache()
    return row


def cpu_rows(args: argparse.Namespace) -> list[dict]:
    """The embedded model at capacity 1.0: plain, offloaded and on-demand alternated `repeats` times."""
    import copy

    from specmd_predict.embedded import load_embedded_model

    torch.set_num_threads(1)  # steadier on shared cores; the same for every variant
    plain, _ = load_embedded_model()
    capacity = args.capacity if args.capacity is not None else 1.0
    names = ["gpu" if v == "gpu" else v for v in args.variants]
    models = {name: offload_variant(copy.deepcopy(plain), name, args, capacity, torch.device("cpu")) for name in names}
    generator = torch.Generator().manual_seed(args.seed)
    prompt_tokens = min(args.prompt_tokens, plain.config.max_position_embeddings - args.new_tokens)
    warmup, measured = (
        torch.randint(2, plain.config.vocab_size, (1, prompt_tokens), generator=generator) for _ in "ab"
    )
    for model in models.values():
        time_generation(model, warmup, max(2, args.warmup_tokens))
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.repeats):  # alternate, so that load on the shared machine hits every variant alike
        for name, model in models.items():
            runs[name].append(time_generation(model, measured, args.new_tokens, reset_after_prefill=name != "gpu"))
    rows = []
    for name, model in models.items():
        results = runs[name]
        row = {
            "variant": "plain" if name == "gpu" else name,
            "capacity": None if name == "gpu" else capacity,
            "ttft_s": statistics.median(r["ttft_s"] for r in results),
            "tpot_s": statistics.median(r["tpot_s"] for r in results),
            "tpot_per_repeat_s": [r["tpot_s"] for r in results],
            "tokens": results[-1]["tokens"],
        }
        if name != "gpu":
            row["cache"] = decode_cache_stats(model, args.new_tokens - 1)
        rows.append(row)
    return rows


def print_table(title: str, rows: list[dict], reference_tokens) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = ("variant", "capacity", "TTFT ms", "TPOT ms", "x base", "hit rate", "stall ms/tok", "MB moved/tok",
               "syncs/tok", "floor ms", "same tokens")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    base = next((r["tpot_s"] for r in rows if r["variant"] in ("gpu", "plain")), None)
    decode = max(1, len(rows[0]["tokens"]) - 1)
    for r in rows:
        cache = r.get("cache", {})
        table.add_row(
            r["variant"],
            "-" if r["capacity"] is None else f"{r['capacity']:.0%}",
            f"{r['ttft_s'] * 1e3:.1f}",
            f"{r['tpot_s'] * 1e3:.2f}",
            f"{r['tpot_s'] / base:.2f}" if base else "-",
            f"{cache['hit_rate']:.1%}" if cache else "-",
            f"{cache['stall_s'] * 1e3 / decode:.2f}" if cache else "-",
            f"{cache['bytes_moved'] / 1e6 / decode:.1f}" if cache else "-",
            f"{cache['host_reads_per_token']:.1f}" if cache else "-",
            f"{r['copy_bound_floor_s'] * 1e3:.2f}" if "copy_bound_floor_s" in r else "-",
            "-" if reference_tokens is None else str(r["tokens"] == reference_tokens),
        )
    Console(width=160).print(table)


def versions() -> dict:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks/runtime.py measures GPU offloading and needs a CUDA GPU; none is available, nothing measured "
            "(run it with --device cpu for the runtime's host overhead on the embedded model)"
        )
        return 0
    payload: dict = {"config": {k: v for k, v in vars(args).items()}, "versions": versions()}
    if args.device == "cpu":
        payload["device"] = f"cpu ({platform.processor() or platform.machine()}, 1 thread)"
        rows = cpu_rows(args)
        title = f"embedded model on CPU, capacity {rows[-1]['capacity']:.0%}, median of {args.repeats} alternations"
    else:
        device = torch.device("cuda", torch.cuda.current_device())
        payload["device"] = torch.cuda.get_device_name(device)
        if args.sweep and not args.skip_tests:
            payload["gpu_tests"] = run_gpu_tests()
        bandwidth = measure_bandwidth(device) if args.sweep else None
        payload["pinned_h2d_bytes_per_s"] = bandwidth
        if bandwidth:
            print(f"pinned host-to-device bandwidth: {bandwidth / 1e9:.1f} GB/s", flush=True)
        rows = gpu_rows(args, device, bandwidth)
        title = f"OLMoE-1B-7B shapes, {args.layers} layers, random bf16 weights, on {payload['device']}"
    reference = next((r["tokens"] for r in rows if r["variant"] in ("gpu", "plain")), None)
    print_table(title, rows, reference)
    payload["results"] = rows
    atomic_write_text(Path(args.out), json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    failed = payload.get("gpu_tests", {}).get("exit_code", 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
