"""Harvest throughput against a bare forward pass of the same model on the same batches, in one run.

    python benchmarks/harvest.py                          # embedded model + corpus, 12 batches of 16 x 256, CPU
    python benchmarks/harvest.py --num-batches 4 --repeats 1 --hidden-layers '[0, 4]' --keep-router-logits
    python benchmarks/harvest.py --model allenai/OLMoE-1B-7B-0924 --device cuda --dtype bfloat16 --batch-size 8

The batches are tokenized once, then timed in alternating rounds (so load from other processes hits both
sides alike); each side's time is its best round:
- bare forward: the decoder call the harvest makes, with no hooks and nothing kept;
- LM forward: the whole model call a user would make (decoder + LM head), for reference;
- harvest: router hooks, per-token columns (float16/int16), Arrow writes to a temp folder, and finishing
  the folder as a `save_to_disk` dataset: everything `harvest()` does per batch.
Reported: tokens/s of each, ratio = harvest time / bare-forward time (target <= 1.3 on the embedded model on
CPU), peak RSS of the process, and RSS growth over the harvest rounds (bounded memory: ~0).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from data_pipelines.config import HarvestConfig
from data_pipelines.model import load_model, load_tokenizer
from data_pipelines.recorder import BatchRecorder
from data_pipelines.sources import open_text_source
from data_pipelines.writer import ShardWriter, harvest_features


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="alternating timing rounds; best round counts")
    parser.add_argument("--hidden-layers", type=json.loads, default=None, help="JSON list; default all layers")
    parser.add_argument("--keep-router-logits", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = HarvestConfig(
        model=args.model, dataset=args.dataset, dtype=args.dtype, device=args.device, seq_len=args.seq_len,
        batch_size=args.batch_size, max_tokens=args.seq_len * args.batch_size * args.num_batches,
        hidden_layers=args.hidden_layers, keep_router_logits=args.keep_router_logits, validation_fraction=0.0,
        progress=False,
    )  # fmt: skip
    tokenizer = load_tokenizer(config)
    rows = list(open_text_source(config).sequences(tokenizer, config.seq_len, config.num_sequences, 0.0))
    loaded = load_model(config, tokenizer)
    device = loaded.device
    batches = [
        torch.from_numpy(np.stack(rows[i : i + args.batch_size])).to(device)
        for i in range(0, len(rows), args.batch_size)
    ]
    num_tokens = sum(b.numel() for b in batches)
    adapter = loaded.adapter
    hidden_layers = list(range(adapter.num_layers)) if config.hidden_layers is None else config.hidden_layers
    features = harvest_features(adapter.num_layers, adapter.top_k, adapter.num_experts, adapter.hidden_size,
                                len(hidden_layers), router_logits=config.keep_router_logits)  # fmt: skip
    recorder = BatchRecorder(loaded.model, adapter, hidden_layers, config.keep_router_logits,
                             config.resolved_prompt_tokens)  # fmt: skip
    process = psutil.Process()

    def bare_forward() -> float:
        start = time.perf_counter()
        for ids_BS in batches:
            recorder.forward(ids_BS)
        sync(device)
        return time.perf_counter() - start

    def lm_forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for ids_BS in batches:
                loaded.model(input_ids=ids_BS, use_cache=False)
        sync(device)
        return time.perf_counter() - start

    rss_after_first: list[int] = []
    data_bytes = 0

    def harvest_path() -> float:
        nonlocal data_bytes
        with tempfile.TemporaryDirectory(prefix="harvest-bench-") as tmp:
            start = time.perf_counter()
            with ShardWriter(Path(tmp) / "data", features, "bench") as writer, recorder:
                for index, ids_BS in enumerate(batches):
                    writer.write(recorder(ids_BS, first_sequence_id=index * args.batch_size))
                    if index == 0:
                        rss_after_first.append(process.memory_info().rss)
            seconds = time.perf_counter() - start
            data_bytes = writer.num_bytes
        return seconds

    bare_forward()  # warm-up: first-call allocations and lazy inits
    times: dict[str, list[float]] = {"bare forward": [], "LM forward": [], "harvest": []}
    rss_end = 0
    for _ in range(args.repeats):
        times["bare forward"].append(bare_forward())
        times["harvest"].append(harvest_path())
        rss_end = process.memory_info().rss
        times["LM forward"].append(lm_forward())
    best = {name: min(t) for name, t in times.items()}
    results = {
        "model": config.model,
        "device": str(device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "tokens_per_round": num_tokens,
        "batches": f"{len(batches)} x {args.batch_size} x {args.seq_len}",
        "hidden_layers_kept": len(hidden_layers),
        "router_logits": config.keep_router_logits,
        "tokens_per_second": {name: round(num_tokens / t) for name, t in best.items()},
        "seconds_per_round": {name: [round(x, 3) for x in t] for name, t in times.items()},
        "ratio_harvest_vs_bare_forward": round(best["harvest"] / best["bare forward"], 3),
        "ratio_harvest_vs_lm_forward": round(best["harvest"] / best["LM forward"], 3),
        "bytes_written_per_token": round(data_bytes / num_tokens, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_growth_during_harvest_mib": round((rss_end - rss_after_first[-1]) / 2**20, 1),
    }
    print(f"harvest benchmark: {results['model']} on {results['device']} ({results['dtype']}, "
          f"{results['torch_threads']} threads), {results['batches']} = {num_tokens:,} tokens per round, "
          f"best of {args.repeats}")  # fmt: skip
    for name, t in best.items():
        print(f"  {name:13s} {num_tokens / t:10,.0f} tok/s   ({t:.2f} s)")
    print(f"  ratio harvest / bare forward: {results['ratio_harvest_vs_bare_forward']:.3f}   "
          f"(harvest / LM forward: {results['ratio_harvest_vs_lm_forward']:.3f})")  # fmt: skip
    print(
        f"  peak RSS {results['peak_rss_mib']:,.1f} MiB; RSS growth from first to last harvest batch "
        f"{results['rss_growth_during_harvest_mib']:+.1f} MiB; {results['bytes_written_per_token']:,.0f} B/token"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
