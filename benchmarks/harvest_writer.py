"""Can the harvest's writer thread keep up with a GPU forward? Synthetic batches at OLMoE-1B-7B shapes, CPU only.

    python benchmarks/harvest_writer.py                        # 32 batches of 8 x 256 tokens into a temp folder
    python benchmarks/harvest_writer.py --dir /dev/shm         # the same into memory (no disk in the way)
    python benchmarks/harvest_writer.py --hidden-layers 1      # a smaller harvest: the router input of 1 layer

What the GPU harvest hands the writer thread: per batch, host buffers [T, L, X] that the device already
copied into (the recorder's reusable buffer sets; here filled once with random values, since a DMA copy costs
the CPU nothing), plus the small per-token columns. The producer submits batches as fast as a buffer set is
free (3 sets, as in data_pipelines.recorder), the writer thread turns each into an Arrow record batch in a
shard file, and the folder is finished as a `save_to_disk` dataset. Reported: the writer's sustained tokens/s
and bytes/s against the target, the GPU's bare forward at 291k tokens/s x 16.6 KB/token (measured on one
H200, issue 13); a ratio below 1 is how far the writer falls short of it on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_pipelines.background import BackgroundWriter
from data_pipelines.recorder import DEFAULT_NUM_BUFFERS, PendingBatch
from data_pipelines.writer import ShardWriter, harvest_features
from specmd_predict.io import atomic_write_text

TARGET_TOKENS_PER_SECOND = 291_000  # benchmarks/harvest.py bare forward, OLMoE-1B-7B shapes, one H200 (issue 13)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-layers", type=int, default=4, help="MoE layers (the issue's OLMoE shapes: 4)")
    parser.add_argument("--hidden-layers", type=int, default=None, help="layers whose router input is kept")
    parser.add_argument("--hidden-size", type=int, default=2048)
    parser.add_argument("--num-experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, default=8 * 256)
    parser.add_argument("--num-batches", type=int, default=32)
    parser.add_argument("--dir", type=Path, default=None, help="where the temp folder goes (default: the system's)")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    num_hidden = args.num_layers if args.hidden_layers is None else args.hidden_layers
    features = harvest_features(args.num_layers, args.top_k, args.num_experts, args.hidden_size, num_hidden)
    rng = np.random.default_rng(0)
    T = args.batch_tokens
    free: list[dict] = []
    for _ in range(DEFAULT_NUM_BUFFERS):
        layered = {
            "expert_ids": torch.from_numpy(rng.integers(0, args.num_experts, (T, args.num_layers, args.top_k))).to(
                torch.int16
            ),
            "expert_weights": torch.rand(T, args.num_layers, args.top_k).to(torch.float16),
        }
        if num_hidden:
            layered["hidden"] = torch.randn(T, num_hidden, args.hidden_size).to(torch.float16)
        free.append(layered)
    import queue

    pool: queue.Queue = queue.Queue()
    for layered in free:
        pool.put(layered)

    def small(first: int) -> dict[str, np.ndarray]:
        position = np.tile(np.arange(256, dtype=np.int32), T // 256 + 1)[:T]
        return {
            "sequence_id": np.repeat(np.arange(first, first + T // 256 + 1, dtype=np.int32), 256)[:T],
            "position": position,
            "token_id": rng.integers(0, 50_000, T).astype(np.int32),
            "is_prompt": position < 192,
        }

    smalls = [small(i * (T // 256)) for i in range(DEFAULT_NUM_BUFFERS)]
    with tempfile.TemporaryDirectory(prefix="harvest-writer-bench-", dir=args.dir) as tmp:
        shards = ShardWriter(Path(tmp) / "data", features, "bench")
        wait_seconds = 0.0
        start, cpu_start = time.perf_counter(), time.process_time()
        with BackgroundWriter(shards) as writer:
            for index in range(args.num_batches):
                waited = time.perf_counter()
                layered = pool.get()  # the forward's thread waits here only when every buffer set is in flight
                wait_seconds += time.perf_counter() - waited
                writer.submit(PendingBatch(smalls[index % len(smalls)], layered, [], lambda b=layered: pool.put(b)))
        shards.close()
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        on_disk = sum(f.stat().st_size for f in (Path(tmp) / "data").iterdir())
        filesystem = _filesystem(Path(tmp))
    num_tokens = args.num_batches * T
    copy_rate = _memory_copy_rate(free[0])
    bytes_per_token = shards.num_bytes / num_tokens
    rate = num_tokens / seconds
    target_bytes = TARGET_TOKENS_PER_SECOND * bytes_per_token
    results = {
        "shapes": f"L={args.num_layers} (hidden kept at {num_hidden}), D={args.hidden_size}, E={args.num_experts}, "
        f"k={args.top_k}; {args.num_batches} batches of {T} tokens",
        "filesystem": filesystem,
        "bytes_per_token": round(bytes_per_token, 1),
        "bytes_on_disk_per_token": round(on_disk / num_tokens, 1),
        "writer_tokens_per_second": round(rate),
        "writer_bytes_per_second": round(rate * bytes_per_token),
        "target_tokens_per_second": TARGET_TOKENS_PER_SECOND,
        "target_bytes_per_second": round(target_bytes),
        "ratio_writer_vs_target": round(rate / TARGET_TOKENS_PER_SECOND, 3),
        "producer_wait_share": round(wait_seconds / seconds, 3),
        "cpu_seconds_per_second": round(cpu_seconds / seconds, 2),
        "memory_copy_bytes_per_second": round(copy_rate),
    }
    print(f"harvest writer benchmark: {results['shapes']}, into {filesystem}")
    print(f"  {bytes_per_token:,.0f} B/token in Arrow ({on_disk / num_tokens:,.0f} B/token on disk)")
    print(
        f"  writer: {rate:,.0f} tokens/s = {rate * bytes_per_token / 1e9:.2f} GB/s; "
        f"target {TARGET_TOKENS_PER_SECOND:,} tokens/s = {target_bytes / 1e9:.2f} GB/s; "
        f"ratio {results['ratio_writer_vs_target']:.3f} "
        f"({'keeps up' if rate >= TARGET_TOKENS_PER_SECOND else 'falls short'})"
    )
    print(f"  producer waited for a free buffer set {results['producer_wait_share']:.0%} of the time")
    print(f"  yardstick: a plain copy of one batch's host buffers runs at {copy_rate / 1e9:.2f} GB/s here")
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2))


def _memory_copy_rate(layered: dict[str, torch.Tensor], repeats: int = 5) -> float:
    """Bytes/s of copying one batch's buffers in host memory: what this machine allows any writer at best."""
    arrays = [t.numpy() for t in layered.values()]
    num_bytes = sum(a.nbytes for a in arrays)
    start = time.perf_counter()
    for _ in range(repeats):
        for array in arrays:
            array.copy()
    return num_bytes * repeats / (time.perf_counter() - start)


def _filesystem(path: Path) -> str:
    """The mount's type, from /proc/mounts where there is one (tmpfs = memory, else a disk)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    best = max((m for m in mounts if str(path.resolve()).startswith(m[1])), key=lambda m: len(m[1]), default=None)
    return f"{best[1]} ({best[2]})" if best else "unknown"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
