"""Torch ops the offloading runtime adds per MoE layer of a decode step, counted with torch.profiler (deterministic).

    python benchmarks/runtime_ops.py                        # embedded model, capacity 1.0 (all hits)
    python benchmarks/runtime_ops.py --baseline main        # and the same counts of git revision `main`, side by side

Decoding is host-bound on a GPU (README, "Measured on one NVIDIA H200": ~1,100 kernel launches per token), so
every torch op the runtime launches per MoE layer costs host time there. This counts them on CPU: for each
variant (the plain model, on-demand = LRU without prefetch, offloaded = router-reuse prefetch + `--eviction`),
a few greedy decode steps after a prefill run under torch.profiler, and the top-level aten ops (an op called by
no other aten op: what the Python code dispatched, each one or more kernel launches on a GPU; views included)
are counted. "+ops/layer" is (variant's ops - plain's ops) / (steps x MoE layers). The per-op difference to
the plain model is listed too. The "+read" rows run the engine's CUDA read path on CPU (`OffloadEngine._read`,
its event and pinned buffer stood in for: `cuda_read_path`), so they add the ops of the per-layer device-to-host
read (copies, packing) that a GPU runs; its event record and wait are not aten ops and are not counted.
`--baseline REV` counts the same in a `git archive` of revision REV (a subprocess with that tree first on the
path), for before/after numbers from one command.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def top_level_ops(model, steps: int = 4, prompt_tokens: int = 16) -> Counter:
    """Top-level aten op names (with counts) of `steps` greedy decode steps of `model` after a prefill, on CPU.
    The same generation runs once unprofiled first, so the profiled one routes exactly as it did: every expert
    it uses is resident already and the slot table is up to date (the all-hit steady state: nothing is copied)."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import DynamicCache

    prompt_ids = torch.arange(3, 3 + prompt_tokens).unsqueeze(0) % model.config.vocab_size

    def generate(profiler=None):
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=prompt_ids, cache=cache, use_cache=True).logits
        token = logits[:, -1].argmax(dim=-1, keepdim=True)
        if profiler is not None:
            profiler.start()
        for _ in range(steps):
            token = model(input_ids=token, cache=cache, use_cache=True).logits[:, -1].argmax(dim=-1, keepdim=True)
        if profiler is not None:
            profiler.stop()

    with torch.inference_mode():
        generate()
        prof = profile(activities=[ProfilerActivity.CPU])
        generate(prof)
    counts: Counter = Counter()
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            counts[event.name] += 1
    return counts


class _StandInEvent:
    """Takes the place of the engine's CUDA event on CPU: nothing to record or wait for."""

    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass


@contextlib.contextmanager
def cuda_read_path(model):
    """Inside: `model`'s engine takes its CUDA read path on CPU (a stand-in event, unpinned host buffers). Works on
    this tree's engine (`PackedReader`) and on earlier ones (`_pinned_at_least`), for `--baseline`."""
    import runtime
    import runtime.engine as engine_module

    engine = runtime.offload_engine(model)
    saved = engine._read_done, torch.cuda.current_stream, getattr(engine_module, "_pinned_at_least", None)

    def unpinned_at_least(buffer, numel, dtype):
        return buffer if buffer is not None and buffer.numel() >= numel else torch.empty(max(numel, 64), dtype=dtype)

    engine._read_done = _StandInEvent()
    torch.cuda.current_stream = lambda device=None: None
    if hasattr(engine, "_reader"):
        engine._reader = type(engine._reader)(pin=False)
    if saved[2] is not None:
        engine_module._pinned_at_least = unpinned_at_least
    try:
        yield engine
    finally:
        engine._read_done, torch.cuda.current_stream = saved[0], saved[1]
        if saved[2] is not None:
            engine_module._pinned_at_least = saved[2]


def variant(model, name: str, capacity: float, eviction: str):
    import runtime

    if name.startswith("on-demand"):
        return runtime.offload(model, capacity=capacity, eviction="lru", prefetch="none", device="cpu")
    if name.startswith("offloaded"):
        return runtime.offload(
            model, capacity=capacity, eviction=eviction, prefetch="router-reuse", horizon=1, device="cpu"
        )
    return model


VARIANT_NAMES = ("plain", "on-demand", "offloaded", "on-demand+read", "offloaded+read")


def ops_per_layer(model, capacity: float = 1.0, eviction: str = "fld", steps: int = 4) -> dict[str, dict]:
    """Per variant: total top-level ops per decode step, ops added per MoE layer over the plain model's, and the
    per-op differences (variant - plain, per decode step)."""
    from specmd_predict.adapters import get_adapter

    num_layers = get_adapter(model).num_layers
    counts = {}
    for name in VARIANT_NAMES:
        model_variant = variant(copy.deepcopy(model), name, capacity, eviction)
        with cuda_read_path(model_variant) if name.endswith("+read") else contextlib.nullcontext():
            counts[name] = top_level_ops(model_variant, steps)
    out = {}
    for name, count in counts.items():
        diff = {op: (count[op] - counts["plain"][op]) / steps for op in count | counts["plain"]}
        out[name] = {
            "ops_per_step": sum(count.values()) / steps,
            "added_ops_per_layer": (sum(count.values()) - sum(counts["plain"].values())) / (steps * num_layers),
            "added_by_op_per_step": {op: d for op, d in sorted(diff.items(), key=lambda kv: -abs(kv[1])) if d},
        }
    return out


def baseline_counts(revision: str, argv: list[str]) -> dict:
    """This script's counts on the tree of git `revision` (extracted to a temporary folder), from a subprocess."""
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=False)
        if archive.returncode != 0:
            raise ValueError(f"git archive {revision}: {archive.stderr.decode().strip()}")
        tar_path = Path(tree) / "tree.tar"
        tar_path.write_bytes(archive.stdout)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tree, filter="data")
        env = dict(os.environ, PYTHONPATH=tree)
        command = [sys.executable, str(Path(__file__).resolve()), "--root", tree, "--json", *argv]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])


def print_counts(title: str, result: dict) -> None:
    print(title)
    for name, row in result.items():
        print(f"  {name:15s} ops/step {row['ops_per_step']:7.1f}   +ops/MoE layer {row['added_ops_per_layer']:5.2f}")
        if name != "plain":
            print("      " + ", ".join(f"{op} {d:+g}" for op, d in row["added_by_op_per_step"].items()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=float, default=1.0, help="fraction of expert bytes on the device")
    parser.add_argument("--eviction", default="fld", help="the offloaded variant's eviction policy")
    parser.add_argument("--steps", type=int, default=4, help="profiled decode steps")
    parser.add_argument("--baseline", default=None, help="a git revision to count too (before/after)")
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)  # --baseline's subprocess: its tree
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # print one JSON line only
    args = parser.parse_args(argv)
    if not 0.0 < args.capacity <= 1.0 or args.steps < 1:
        print("error: --capacity must be in (0, 1] and --steps >= 1", file=sys.stderr)
        return 2
    if args.baseline is not None:  # checked before any work: a bad revision is one line, at once
        check = ["git", "rev-parse", "--verify", "--quiet", f"{args.baseline}^{{commit}}"]
        if subprocess.run(check, cwd=ROOT, capture_output=True, check=False).returncode != 0:
            print(f"error: --baseline {args.baseline!r} is not a git revision of this repository", file=sys.stderr)
            return 2
    if args.root is not None:
        sys.path.insert(0, args.root)
    from specmd_predict.embedded import load_embedded_model

    torch.set_num_threads(1)
    model, _ = load_embedded_model()
    result = ops_per_layer(model, args.capacity, args.eviction, args.steps)
    if args.json:
        print(json.dumps(result))
        return 0
    setting = f"embedded model, capacity {args.capacity}, {args.steps} decode steps, top-level aten ops"
    if args.baseline is not None:
        forwarded = ["--capacity", str(args.capacity), "--eviction", args.eviction, "--steps", str(args.steps)]
        try:
            before = baseline_counts(args.baseline, forwarded)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print_counts(f"BEFORE ({args.baseline}): {setting}", before)
    print_counts(f"{'AFTER (this tree)' if args.baseline else 'this tree'}: {setting}", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
