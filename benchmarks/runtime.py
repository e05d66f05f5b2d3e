"""TTFT and TPOT of offloaded generation vs on-demand loading vs the whole model on one device.

    python benchmarks/runtime.py --sweep                    # the one-command GPU check (< 8 min on an H100/H200)
    python benchmarks/runtime.py --capacity 0.25 --layers 4 # one capacity on the GPU
    python benchmarks/runtime.py --device cpu               # the runtime's own host overhead, no GPU needed

GPU (default `--device cuda`): a model with OLMoE-1B-7B's shapes (hidden 2048, 64 experts of intermediate
1024, top-8, vocab 50304) and random bf16 weights; `--layers` sets the decoder depth. Variants, each on the
same weights (built on the GPU from one seed every time) and the same random prompt after a warm-up on another,
decoding in lockstep per capacity (one synced step of each model in turn, the order rotating: a lent GPU
machine's host speed drifts by 2x within minutes, and the models here are host-bound, so only side-by-side
steps compare; "x base" is the median over steps of a row's step time over the GPU model's same step):
  gpu        the whole model on the GPU (the lower bound);
  on-demand  runtime.offload(capacity, eviction="lru", prefetch="none"): every miss is fetched when needed;
  offloaded  runtime.offload(capacity, eviction=--eviction, router-reuse prefetch --horizon layers ahead);
  bank       the same with --predictors (only when given).
`--sweep` first runs the GPU tests (pytest -m gpu tests/runtime), measures pinned host-to-device bandwidth,
then benchmarks capacities 5%, 10%, 25% and 90%. Each offloaded row gets a copy-bound floor: the larger of
the all-on-GPU TPOT and the bytes its demand misses moved per decode token over the measured bandwidth.
`--evictions a,b,...` adds one offloaded row per policy at each capacity (default: the runtime's default).

CPU (`--device cpu`): the embedded model at capacity 1.0 (every expert fits: nothing but the runtime's own
work differs), plain vs offloaded (router reuse) vs on-demand; the ratio offloaded / plain TPOT is the
runtime's host overhead (target <= 1.15). The models decode in lockstep: every decode step runs once on each
model, in an order that rotates from step to step, so load on shared cores hits every variant alike; that is
repeated `--repeats` times, each time on another prompt from the embedded corpus (text like the model's
training data, so its routing is the real one; `--prompts random` for random ids), and each TPOT (and each
ratio to plain) is the median over the repeats; the cache counters add up every repeat's decode steps. Beside the
wall time, each step's CPU time of the (single) compute thread is timed too ("CPU ms/tok"): the work itself,
which other processes on shared cores do not inflate; on a machine of its own the two agree.
    python benchmarks/runtime.py --device cpu --capacities 0.25,0.5,0.75 --evictions lru,least-stale-reverse,...
compares eviction policies below full capacity (offloaded rows, one per capacity and policy: hit rate, bytes
moved, TPOT), which is how the runtime's default eviction policy is chosen while no GPU sweep has confirmed it.

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

from runtime.offload import DEFAULT_EVICTION  # noqa: E402
from specmd_predict.embedded_corpus import corpus_prompts  # noqa: E402
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
    parser.add_argument(
        "--capacities",
        default=None,
        help="comma-separated fractions, one row set each (default: --capacity; sweep: 5/10/25/90%%)",
    )
    parser.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (prefill)")
    parser.add_argument("--new-tokens", type=int, default=64, help="generated tokens (1 prefill + the rest decode)")
    parser.add_argument("--warmup-tokens", type=int, default=8, help="tokens generated once before measuring")
    parser.add_argument("--repeats", type=int, default=5, help="CPU: plain/offloaded alternations (median)")
    parser.add_argument(
        "--evictions", "--eviction", dest="evictions", default=None,
        help=f"comma-separated eviction policies, one offloaded row each (default: the runtime's, {DEFAULT_EVICTION})",
    )  # fmt: skip
    parser.add_argument("--horizon", type=int, default=1, help="router-reuse layers ahead for the offloaded rows")
    parser.add_argument("--predictors", default=None, help="a predictor bank: adds the 'bank' variant")
    parser.add_argument("--variants", default=None, help=f"comma-separated, of {','.join(VARIANTS)} (default: all)")
    parser.add_argument(
        "--profile", type=float, default=None, metavar="CAPACITY",
        help="GPU: also profile 8 decode steps (torch.profiler) of the whole model and of the first offloaded row "
        "at CAPACITY; the op tables go to <--out>.profile.txt",
    )  # fmt: skip
    parser.add_argument("--skip-tests", action="store_true", help="--sweep without running the GPU tests first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and prompts")
    parser.add_argument(
        "--prompts", choices=("corpus", "random"), default="corpus",
        help="CPU: prompts from the embedded corpus (a new one each repeat; default) or random ids (GPU: random)",
    )  # fmt: skip
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
    args.capacities = parse_capacities(parser, args)
    args.evictions = parse_evictions(parser, args.evictions)
    if args.sweep and args.device == "cpu":
        parser.error("--sweep is the GPU check; on CPU run --device cpu alone")
    return args


def parse_capacities(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[float, ...]:
    """The capacities to benchmark: --capacities, else --capacity, else the sweep's (GPU) or 1.0 (CPU) / 5% (GPU)."""
    if args.capacities is not None and args.capacity is not None:
        parser.error("give --capacity or --capacities, not both")
    if args.capacities is None:
        if args.capacity is not None:
            return (args.capacity,)
        return SWEEP_CAPACITIES if args.sweep else ((1.0,) if args.device == "cpu" else (0.05,))
    try:
        capacities = tuple(float(c) for c in args.capacities.split(","))
    except ValueError:
        parser.error(f"--capacities takes comma-separated fractions such as 0.25,0.5; got {args.capacities!r}")
    bad = [c for c in capacities if not 0.0 < c <= 1.0]
    if bad:
        parser.error(f"--capacities are fractions of all expert bytes in (0, 1], got {bad}")
    return capacities


def parse_evictions(parser: argparse.ArgumentParser, evictions: str | None) -> list[str]:
    from runtime.policies import EVICTION_POLICIES

    names = evictions.split(",") if evictions else [DEFAULT_EVICTION]
    unknown = [n for n in names if n not in EVICTION_POLICIES or n == "belady"]
    if unknown:
        known = ", ".join(n for n in EVICTION_POLICIES if n != "belady")
        parser.error(
            f"unknown eviction policies {unknown} (belady needs the future: simulator only); choose from {known}"
        )
    return names


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


def offload_variant(model, name: str, args: argparse.Namespace, capacity, device: torch.device, eviction=None):
    """`model` as variant `name` ("gpu"/"plain": unchanged) at `capacity`, offloaded ones evicting with `eviction`
    (default: the first of --evictions; on-demand is always LRU without prefetch)."""
    import runtime

    eviction = eviction or args.evictions[0]
    if name == "on-demand":
        return runtime.offload(model, capacity=capacity, eviction="lru", prefetch="none", device=device)
    if name == "offloaded":
        return runtime.offload(
            model, capacity=capacity, eviction=eviction, prefetch="router-reuse", horizon=args.horizon, device=device
        )
    if name == "bank":
        return runtime.offload(model, predictors=args.predictors, capacity=capacity, eviction=eviction, device=device)
    return model


def row_specs(args: argparse.Namespace, capacity: float) -> list[tuple[str, str | None]]:
    """(variant, eviction) of the offloaded rows at one capacity: on-demand once (LRU), the others per policy."""
    specs = []
    for name in args.variants:
        if name == "on-demand":
            specs.append((name, "lru"))
        elif name != "gpu":
            specs += [(name, eviction) for eviction in args.evictions]
    return specs


def copy_bound_floor(gpu_tpot_s: float | None, miss_bytes_per_token: float, bandwidth: float) -> float:
    """The fastest a row could decode: the all-on-GPU TPOT, or the time its missed bytes take to copy at the
    measured bandwidth if that is longer (only copies that hide behind compute beat neither)."""
    return max(gpu_tpot_s or 0.0, miss_bytes_per_token / bandwidth)


def random_prompts(vocab_size: int, num_tokens: int, seed: int, device: torch.device) -> list[torch.Tensor]:
    """Two [1, num_tokens] prompts of random token ids (a warm-up one and the measured one), the same per seed."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab_size, (1, num_tokens), generator=generator).to(device) for _ in range(2)]


# ---- timing -------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def greedy_step(model, input_ids: torch.Tensor, cache) -> torch.Tensor:
    """One forward of `input_ids` through `model` with the KV `cache`: the [B, 1] greedy next token, left on the
    device."""
    return model(input_ids=input_ids, cache=cache, use_cache=True).logits[:, -1].argmax(dim=-1, keepdim=True)


def decode_cache_stats(model, decode_tokens: int) -> dict:
    import runtime

    stats = runtime.offload_stats(model)
    out = {k: v for k, v in stats.as_dict().items() if k != "layers"}
    out["miss_bytes_per_token"] = stats.misses * stats.expert_bytes / decode_tokens
    out["host_reads_per_token"] = stats.host_reads / decode_tokens
    out["bytes_moved_per_token"] = stats.bytes_moved / decode_tokens
    out["stall_s_per_token"] = stats.stall_s / decode_tokens
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
def gpu_rows(args: argparse.Namespace, device: torch.device, bandwidth: float | None, on_row=None) -> list[dict]:
    """Per capacity, the whole model on the GPU and every offloaded variant decode the same prompt in lockstep
    (one step each in turn, each step synced: a host slower for a while, as a shared VM's can be, slows every
    variant alike); each row's "x gpu" is the median over steps of its step time over the GPU model's same
    step. `on_row(rows)` after each capacity (the caller saves partial results). A variant that raises is kept
    as a row with {"error": ...}; the sweep goes on."""
    config = olmoe_1b_7b_config(args.layers)
    warmup, measured = random_prompts(config.vocab_size, args.prompt_tokens, args.seed, device)
    base = build_model(config, args.seed, device)  # the whole model on the GPU, the reference of every capacity
    rows: list[dict] = []
    for capacity in args.capacities:
        models, failed = {("gpu", None, None): base}, []
        for name, eviction in row_specs(args, capacity):
            print(f"building {name} ({eviction}) at {capacity:.0%} ...", flush=True)
            try:
                model = build_model(config, args.seed, device)
                models[(name, capacity, eviction)] = offload_variant(model, name, args, capacity, device, eviction)
            except Exception as err:  # noqa: BLE001 - one broken variant must not lose the sweep's others
                failed.append(_error_row(name, capacity, eviction, err))
        print(f"decoding {len(models)} models in lockstep at {capacity:.0%} ...", flush=True)
        try:
            time_lockstep(models, warmup, max(2, args.warmup_tokens))
            run = time_lockstep(models, measured, args.new_tokens)
        except Exception as err:  # noqa: BLE001
            run, failed = {}, failed + [_error_row(*spec, err) for spec in models]
        rows += [lockstep_row(spec, run, capacity, bandwidth) for spec in run] + failed
        del models, run
        gc.collect()  # an offloaded model is a reference cycle (its experts hold the engine's runners): free it now
        torch.cuda.empty_cache()
        if on_row is not None:
            on_row(rows)
    return rows


def lockstep_row(spec: tuple, run: dict, capacity: float, bandwidth: float | None) -> dict:
    """One model's row of a lockstep run: its timings, ratio to the GPU model step by step, counters, floor."""
    name, _, eviction = spec
    result, base = run[spec], run[("gpu", None, None)]
    row = {"variant": name, "capacity": capacity, "eviction": eviction, "lockstep_capacity": capacity}
    row |= {k: v for k, v in result.items() if k != "cpu_tpot_s"}
    row["tpot_ratio_to_plain"] = statistics.median(
        a / b for a, b in zip(result["steps_s"], base["steps_s"], strict=True)
    )
    if name == "gpu":
        row["capacity"] = None
    elif bandwidth:
        row["copy_bound_floor_s"] = copy_bound_floor(base["tpot_s"], result["cache"]["miss_bytes_per_token"], bandwidth)
    return row


def _error_row(name: str, capacity, eviction, err: Exception) -> dict:
    print(f"  {name} ({eviction}) at {capacity}: {type(err).__name__}: {err}", flush=True)
    return {"variant": name, "capacity": capacity, "eviction": eviction, "error": f"{type(err).__name__}: {err}"}


@torch.inference_mode()
def profile_decode(model, prompt_ids: torch.Tensor, steps: int = 8) -> str:
    """torch.profiler's op table (CPU and CUDA, by total CPU time) of `steps` greedy decode steps after a prefill."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    token = greedy_step(model, prompt_ids, cache)
    for _ in range(2):  # the first decode steps warm up
        token = greedy_step(model, token, cache)
    _sync(prompt_ids.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if prompt_ids.is_cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            token = greedy_step(model, token, cache)
        _sync(prompt_ids.device)
    return prof.key_averages().table(sort_by="cpu_time_total", row_limit=40, max_name_column_width=60)


def write_profiles(args: argparse.Namespace, device: torch.device) -> str:
    """Profile the whole model and the first offloaded variant at --profile's capacity; returns the file."""
    config = olmoe_1b_7b_config(args.layers)
    _, measured = random_prompts(config.vocab_size, args.prompt_tokens, args.seed, device)
    name, eviction = next(iter(row_specs(args, args.profile)[1:] or row_specs(args, args.profile)))
    sections = []
    for variant, capacity, evict in (("gpu", None, None), (name, args.profile, eviction)):
        print(f"profiling {variant}" + (f" ({evict}) at {capacity:.0%}" if capacity else "") + " ...", flush=True)
        model = offload_variant(build_model(config, args.seed, device), variant, args, capacity, device, evict)
        sections.append(f"==== {variant} {evict or ''} {capacity or ''}\n{profile_decode(model, measured)}")
        del model
        gc.collect()
        torch.cuda.empty_cache()
    out = Path(args.out).with_suffix(".profile.txt")
    atomic_write_text(out, "\n\n".join(sections))
    print(f"wrote {out}", flush=True)
    return str(out)


@torch.inference_mode()
def time_lockstep(models: dict[str, torch.nn.Module], prompt_ids: torch.Tensor, new_tokens: int) -> dict[str, dict]:
    """Greedy decoding of one prompt by every model at once, one decode step each in turn, the order rotating
    from step to step (so that a burst of load on shared cores hits all alike). Per model: TTFT, the median
    step time (TPOT) and the tokens; offloaded models' counters are reset after the prefill."""
    from transformers import DynamicCache

    import runtime
    from runtime.dispatch import is_offloaded

    names = list(models)
    caches = {name: DynamicCache(config=model.config) for name, model in models.items()}
    state: dict[str, dict] = {}
    for name, model in models.items():
        start = time.perf_counter()
        token = greedy_step(model, prompt_ids, caches[name])
        _sync(prompt_ids.device)
        state[name] = {"ttft_s": time.perf_counter() - start, "steps": [], "cpu_steps": [], "tokens": [token]}
        if is_offloaded(model):
            runtime.reset_offload_stats(model)
    for step in range(new_tokens - 1):
        for name in names[step % len(names) :] + names[: step % len(names)]:
            run = state[name]
            start, start_cpu = time.perf_counter(), time.thread_time()
            run["tokens"].append(greedy_step(models[name], run["tokens"][-1], caches[name]))
            _sync(prompt_ids.device)
            run["steps"].append(time.perf_counter() - start)
            run["cpu_steps"].append(time.thread_time() - start_cpu)
    out = {}
    for name, run in state.items():
        out[name] = {
            "ttft_s": run["ttft_s"],
            "tpot_s": statistics.median(run["steps"]),
            "cpu_tpot_s": statistics.median(run["cpu_steps"]),
            "steps_s": run["steps"],
            "tokens": torch.cat(run["tokens"], dim=-1).flatten().tolist(),
        }
        if is_offloaded(models[name]):
            out[name]["cache"] = decode_cache_stats(models[name], new_tokens - 1)
    return out


RATES = ("hit_rate", "prefetch_precision", "prefetch_recall", "host_reads_per_pass", "capacity_fraction")
RATES += ("miss_bytes_per_token", "host_reads_per_token", "bytes_moved_per_token", "stall_s_per_token")


def sum_cache_stats(per_run: list[dict], decode_tokens: int) -> dict:
    """The decode counters of several runs added up (each run `decode_tokens` steps), rates recomputed."""
    total = {}
    for key, value in per_run[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key not in RATES:
            total[key] = sum(run[key] for run in per_run)
        else:
            total[key] = value
    for key in ("num_slots", "capacity_bytes", "expert_bytes", "capacity_fraction"):
        total[key] = per_run[0][key]
    requests = total["hits"] + total["misses"] + total["late_prefetches"]
    total["hit_rate"] = total["hits"] / requests if requests else 0.0
    tokens = decode_tokens * len(per_run)
    total["miss_bytes_per_token"] = total["misses"] * total["expert_bytes"] / tokens
    total["host_reads_per_token"] = total["host_reads"] / tokens
    total["bytes_moved_per_token"] = total["bytes_moved"] / tokens
    total["stall_s_per_token"] = total["stall_s"] / tokens
    return total


def cpu_rows(args: argparse.Namespace) -> list[dict]:
    """The embedded model: plain, and each offloaded variant at each capacity, decoding in lockstep `repeats`
    times; TPOT and the ratio to plain are medians over the repeats."""
    import copy

    from specmd_predict.embedded import load_embedded_model

    torch.set_num_threads(1)  # steadier on shared cores; the same for every variant
    plain, tokenizer = load_embedded_model()
    specs = [("plain", None, None)] if "gpu" in args.variants else []
    specs += [
        (name, capacity, eviction) for capacity in args.capacities for name, eviction in row_specs(args, capacity)
    ]
    models = {
        spec: offload_variant(copy.deepcopy(plain), spec[0], args, spec[1], torch.device("cpu"), spec[2])
        for spec in specs
    }
    prompt_tokens = min(args.prompt_tokens, plain.config.max_position_embeddings - args.new_tokens)
    if args.prompts == "corpus":
        prompts = corpus_prompts(tokenizer, prompt_tokens, 1 + args.repeats)
    else:
        warmup, measured = random_prompts(plain.config.vocab_size, prompt_tokens, args.seed, torch.device("cpu"))
        prompts = [warmup] + [measured] * args.repeats
    time_lockstep(models, prompts[0], max(2, args.warmup_tokens))
    runs = [time_lockstep(models, prompt, args.new_tokens) for prompt in prompts[1:]]
    rows = []
    for spec in models:
        name, capacity, eviction = spec
        results = [run[spec] for run in runs]
        row = {
            "variant": name,
            "capacity": capacity,
            "eviction": eviction,
            "ttft_s": statistics.median(r["ttft_s"] for r in results),
            "tpot_s": statistics.median(r["tpot_s"] for r in results),
            "tpot_per_repeat_s": [r["tpot_s"] for r in results],
            "tokens": results[-1]["tokens"],
        }
        row["cpu_tpot_s"] = statistics.median(r["cpu_tpot_s"] for r in results)
        if specs[0][0] == "plain":
            for key in ("tpot_s", "cpu_tpot_s"):
                ratio = statistics.median(run[spec][key] / run[specs[0]][key] for run in runs)
                row[key.replace("_s", "_ratio_to_plain")] = ratio
        if specs[0][0] == "plain":
            row["same_tokens_every_repeat"] = all(run[spec]["tokens"] == run[specs[0]]["tokens"] for run in runs)
        if name != "plain":
            row["cache"] = sum_cache_stats([r["cache"] for r in results], args.new_tokens - 1)  # every repeat's
        rows.append(row)
    return rows


def print_table(title: str, rows: list[dict], reference_tokens) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = ("variant", "eviction", "capacity", "TTFT ms", "TPOT ms", "x base", "CPU ms/tok", "x base CPU",
               "hit rate", "stall ms/tok", "MB moved/tok", "syncs/tok", "floor ms", "same tokens")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    base = next((r["tpot_s"] for r in rows if r["variant"] in ("gpu", "plain") and "error" not in r), None)
    for r in rows:
        if "error" in r:  # a row that broke: its place in the table, and why
            capacity = "-" if r["capacity"] is None else f"{r['capacity']:.0%}"
            table.add_row(r["variant"], r.get("eviction") or "-", capacity, "error", r["error"][:60], *["-"] * 9)
            continue
        cache = r.get("cache", {})
        ratio = r.get("tpot_ratio_to_plain", r["tpot_s"] / base if base else None)
        table.add_row(
            r["variant"],
            r.get("eviction") or "-",
            "-" if r["capacity"] is None else f"{r['capacity']:.0%}",
            f"{r['ttft_s'] * 1e3:.1f}",
            f"{r['tpot_s'] * 1e3:.2f}",
            "-" if ratio is None else f"{ratio:.2f}",
            f"{r['cpu_tpot_s'] * 1e3:.2f}" if "cpu_tpot_s" in r else "-",
            f"{r['cpu_tpot_ratio_to_plain']:.2f}" if "cpu_tpot_ratio_to_plain" in r else "-",
            f"{cache['hit_rate']:.1%}" if cache else "-",
            f"{cache['stall_s_per_token'] * 1e3:.2f}" if cache else "-",
            f"{cache['bytes_moved_per_token'] / 1e6:.1f}" if cache else "-",
            f"{cache['host_reads_per_token']:.1f}" if cache else "-",
            f"{r['copy_bound_floor_s'] * 1e3:.2f}" if "copy_bound_floor_s" in r else "-",
            "-" if reference_tokens is None else str(r["tokens"] == reference_tokens),
        )
    Console(width=180).print(table)


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
        title = f"embedded model on CPU in lockstep, median of {args.repeats} repeats (x base: of per-repeat ratios)"
    else:
        device = torch.device("cuda", torch.cuda.current_device())
        payload["device"] = torch.cuda.get_device_name(device)
        if args.sweep and not args.skip_tests:
            payload["gpu_tests"] = run_gpu_tests()
        bandwidth = measure_bandwidth(device) if args.sweep else None
        payload["pinned_h2d_bytes_per_s"] = bandwidth
        if bandwidth:
            print(f"pinned host-to-device bandwidth: {bandwidth / 1e9:.1f} GB/s", flush=True)

        def save_partial(rows_so_far: list[dict]) -> None:
            atomic_write_text(Path(args.out), json.dumps(payload | {"results": rows_so_far, "partial": True}, indent=2))

        rows = gpu_rows(args, device, bandwidth, on_row=save_partial)
        if args.profile is not None:
            payload["profile"] = write_profiles(args, device)
        title = f"OLMoE-1B-7B shapes, {args.layers} layers, random bf16 weights, on {payload['device']}"
    reference = next((r["tokens"] for r in rows if r["variant"] in ("gpu", "plain") and "error" not in r), None)
    print_table(title, rows, reference)
    payload["results"] = rows
    atomic_write_text(Path(args.out), json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    failed = payload.get("gpu_tests", {}).get("exit_code", 0) or any("error" in r for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
