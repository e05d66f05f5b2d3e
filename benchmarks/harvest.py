"""Harvest throughput against a bare forward pass of the same model on the same batches, in one run.

    python benchmarks/harvest.py                          # embedded model + corpus, 12 batches of 16 x 256, CPU
    python benchmarks/harvest.py --num-batches 4 --repeats 1 --hidden-layers '[0, 4]' --keep-router-logits
    python benchmarks/harvest.py --model allenai/OLMoE-1B-7B-0924 --device cuda --dtype bfloat16 --batch-size 8

The batches are tokenized once (kept on the host, as harvest() keeps them); then, for `--repeats` rounds,
each side runs over all of them, one side after the other within the round (so load from other processes hits
them alike):
- bare forward: the decoder call the harvest makes, with no hooks and nothing kept;
- harvest: router hooks, per-token columns cast on the device and copied into reusable host buffers (pinned,
  non-blocking, on a side stream on CUDA), Arrow writes on the background writer thread, and finishing the
  folder as a `save_to_disk` dataset: everything `harvest()` does, timed until the last byte is written;
- harvest, inline writer (with --inline-writer): the same with Arrow writes in the forward's thread, as before
  the writer thread existed;
- LM forward: the whole model call a user would make (decoder + LM head), for reference.
A side runs over whole rounds because the writer thread overlaps the next forward: interleaving sides batch by
batch would either stall the writer or let it slow the bare forward. Reported: tokens/s of each, ratio =
harvest time / bare-forward time (target <= 1.1 on CPU, <= 1.3 on a GPU) as total wall time, median per round,
and process CPU time (all threads; the steadiest on a busy machine), bytes written per token, peak RSS, and
RSS growth from the first to the last round (bounded memory: ~0).
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

from data_pipelines.background import BackgroundWriter
from data_pipelines.config import HarvestConfig
from data_pipelines.model import load_model, load_tokenizer
from data_pipelines.pipeline import _num_threads
from data_pipelines.recorder import DEFAULT_NUM_BUFFERS, BatchRecorder
from data_pipelines.sources import open_text_source
from data_pipelines.writer import ShardWriter, harvest_features
from specmd_predict.io import atomic_write_text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the batches")
    parser.add_argument("--hidden-layers", type=json.loads, default=None, help="JSON list; default all layers")
    parser.add_argument("--keep-router-logits", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: what harvest() uses)")
    parser.add_argument("--inline-writer", action="store_true", help="also time the harvest with writes inline")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    args = parse_args()
    config = HarvestConfig(
        model=args.model, dataset=args.dataset, dtype=args.dtype, device=args.device, seq_len=args.seq_len,
        batch_size=args.batch_size, max_tokens=args.seq_len * args.batch_size * args.num_batches,
        hidden_layers=args.hidden_layers, keep_router_logits=args.keep_router_logits,
        progress=False,
    )  # fmt: skip
    tokenizer = load_tokenizer(config)
    rows = list(open_text_source(config).sequences(tokenizer, config.seq_len, config.num_sequences, 0.0))
    loaded = load_model(config, tokenizer)
    threads = args.threads or _num_threads(config, loaded)  # the harvest's own choice unless told
    if threads:
        torch.set_num_threads(threads)
    device = loaded.device
    batches = [torch.from_numpy(np.stack(rows[i : i + args.batch_size])) for i in range(0, len(rows), args.batch_size)]
    num_tokens = sum(b.numel() for b in batches)
    adapter = loaded.adapter
    hidden_layers = list(range(adapter.num_layers)) if config.hidden_layers is None else config.hidden_layers
    features = harvest_features(adapter.num_layers, adapter.top_k, adapter.num_experts, adapter.hidden_size,
                                len(hidden_layers), router_logits=config.keep_router_logits)  # fmt: skip
    recorder = BatchRecorder(loaded.model, adapter, hidden_layers, config.keep_router_logits,
                             config.resolved_prompt_tokens)  # fmt: skip
    process = psutil.Process()
    sides = ("bare forward", "harvest", *(["harvest, inline writer"] if args.inline_writer else []), "LM forward")
    wall = {side: 0.0 for side in sides}
    cpu = {side: 0.0 for side in sides}
    per_round_ratio: list[float] = []

    def timed(side: str, fn) -> float:
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        seconds = time.perf_counter() - wall_start
        wall[side] += seconds
        cpu[side] += time.process_time() - cpu_start
        return seconds

    def bare_round() -> None:
        for ids_BS in batches:
            recorder.forward(ids_BS)

    written = {"bytes": 0}

    def harvest_round(folder: Path) -> None:
        shards = ShardWriter(folder, features, "bench")
        with recorder, BackgroundWriter(shards) as writer:
            for index, ids_BS in enumerate(batches):
                writer.submit(recorder.record(ids_BS, index * args.batch_size))
        shards.close()  # finishing the save_to_disk folder is part of a harvest
        written["bytes"] = shards.num_bytes

    def inline_round(folder: Path) -> None:
        with recorder, ShardWriter(folder, features, "bench") as shards:
            for index, ids_BS in enumerate(batches):
                shards.write(recorder(ids_BS, index * args.batch_size))

    def lm_round() -> None:
        with torch.inference_mode():
            for ids_BS in batches:
                loaded.model(input_ids=ids_BS.to(device), use_cache=False)

    recorder.forward(batches[0])  # warm-up: first-call allocations and lazy inits
    rss_first, rss_last, data_bytes = 0, 0, 0
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="harvest-bench-") as tmp:
            bare = timed("bare forward", bare_round)
            step = timed("harvest", lambda folder=Path(tmp) / "data": harvest_round(folder))
            data_bytes = written["bytes"]
            per_round_ratio.append(step / bare)
            if args.inline_writer:
                timed("harvest, inline writer", lambda folder=Path(tmp) / "inline": inline_round(folder))
            timed("LM forward", lm_round)
            rss_first = rss_first or process.memory_info().rss
            rss_last = process.memory_info().rss
    total_tokens = num_tokens * args.repeats
    results = {
        "model": config.model,
        "device": str(device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "batches": f"{len(batches)} x {args.batch_size} x {args.seq_len} = {num_tokens} tokens, {args.repeats} rounds",
        "hidden_layers_kept": len(hidden_layers),
        "router_logits": config.keep_router_logits,
        "tokens_per_second": {side: round(total_tokens / wall[side]) for side in sides},
        "wall_seconds": {side: round(wall[side], 3) for side in sides},
        "cpu_seconds": {side: round(cpu[side], 3) for side in sides},
        "ratio_harvest_vs_bare_forward": round(wall["harvest"] / wall["bare forward"], 3),
        "ratio_median_per_round": round(float(np.median(per_round_ratio)), 3),
        **(
            {"ratio_inline_writer_vs_bare_forward": round(wall["harvest, inline writer"] / wall["bare forward"], 3)}
            if args.inline_writer
            else {}
        ),
        "host_buffers_in_flight": DEFAULT_NUM_BUFFERS,
        "ratio_cpu_time": round(cpu["harvest"] / cpu["bare forward"], 3),
        "ratio_harvest_vs_lm_forward": round(wall["harvest"] / wall["LM forward"], 3),
        "bytes_written_per_token": round(data_bytes / num_tokens, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_growth_first_to_last_round_mib": round((rss_last - rss_first) / 2**20, 1),
    }
    print(f"harvest benchmark: {results['model']} on {results['device']} ({results['dtype']}, "
          f"{results['torch_threads']} threads), {results['batches']}")  # fmt: skip
    for side in sides:
        print(f"  {side:22s} {results['tokens_per_second'][side]:10,} tok/s   "
              f"(wall {wall[side]:.2f} s, CPU {cpu[side]:.2f} s)")  # fmt: skip
    print(f"  ratio harvest / bare forward: {results['ratio_harvest_vs_bare_forward']:.3f} wall, "
          f"{results['ratio_median_per_round']:.3f} median per round, {results['ratio_cpu_time']:.3f} CPU time "
          f"(harvest / LM forward: {results['ratio_harvest_vs_lm_forward']:.3f})")  # fmt: skip
    print(
        f"  peak RSS {results['peak_rss_mib']:,.1f} MiB; RSS growth from first to last round "
        f"{results['rss_growth_first_to_last_round_mib']:+.1f} MiB; {results['bytes_written_per_token']:,.0f} B/token"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
