"""Convert FLAME-MoE-290M's public routing traces (CMU-FLAME/FLAME-MoE-Traces .pt files) to the trace schema.

    python examples/convert_flame_moe_traces.py PATH/TO/flame-moe-290m flame_moe_290m.parquet
    specmd-eval --trace flame_moe_290m.parquet --capacities '[0.05, 0.1, 0.25]' --no-wandb
    # a learned prefetcher: train the routing-only kind on one part, replay the other (docs/results/traces.md)
    python examples/convert_flame_moe_traces.py PATH flame_encoder.parquet --parts encoder
    specmd-train --trace flame_encoder.parquet --batch-size 64 --max-epochs 30 --no-wandb

PATH is the folder holding `Sample routing traces/` (each .pt file a dict with `indices` [N, 6] expert ids,
`scores` [N, 6] router softmax, per decoder layer; MoE decoder layers 2..9 become MoE layers 0..7 of 64
experts, top-6). Two parts, written as one Parquet file in the schema of `data_pipelines/routing_trace.py`:
- `Decoder_Batch_0-64/{1st..10th}/Layer_*`: the p-th token (p = 0..9) of 64 windows -> sequences 0..63,
  positions 0..9, phase decode (their prompts were not logged): 640 one-token passes.
- `Encoder_Batch_0-32/Layer_*`: 2,048 teacher-forced tokens, cut as the files say (num_sequences x
  sequence_length, 32 x 64) -> sequences 64..95; the first --encoder-prompt-tokens of each are one prefill
  pass and the rest one-token passes (with causal attention a token's routing is the same either way).
`--parts` picks one of them. The scores become `weights` (the only signal such a trace has).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from specmd_predict.io import atomic_file

NUM_EXPERTS = 64
FIRST_MOE_DECODER_LAYER = 2
ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th")


def _load(folder: Path) -> dict:
    files = sorted(folder.glob("*.pt"))
    if len(files) != 1:
        raise SystemExit(f"convert: expected one .pt file in {folder}, found {len(files)}")
    return torch.load(files[0], weights_only=True)


def _layers(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.glob("Layer_*"):
        match = re.fullmatch(r"Layer_(\d+)", path.name)
        if match:
            found.append((int(match.group(1)) - FIRST_MOE_DECODER_LAYER, path))
    if not found:
        raise SystemExit(f"convert: no Layer_* folders in {folder}")
    return sorted(found)


def decoder_rows(root: Path) -> dict[str, list]:
    """Windows 0..63 x positions 0..9 x layers, in (window, position, layer) order."""
    per = {}  # (position, layer) -> (indices [64, 6], scores [64, 6])
    for position, ordinal in enumerate(ORDINALS):
        for layer, folder in _layers(root / "Decoder_Batch_0-64" / ordinal):
            data = _load(folder)
            per[position, layer] = (data["indices"].numpy(), data["scores"].numpy())
    num_windows = per[0, 0][0].shape[0]
    layers = sorted({layer for _, layer in per})
    rows = {"sequence": [], "position": [], "phase": [], "layer": [], "expert_ids": [], "weights": []}
    for window in range(num_windows):
        for position in range(len(ORDINALS)):
            for layer in layers:
                ids, scores = per[position, layer]
                _append(rows, window, position, "decode", layer, ids[window], scores[window])
    return rows


def encoder_rows(root: Path, first_sequence: int, prompt_tokens: int) -> dict[str, list]:
    """The teacher-forced stream cut into the files' num_sequences x sequence_length."""
    per = {layer: _load(folder) for layer, folder in _layers(root / "Encoder_Batch_0-32")}
    meta = per[0]
    num_sequences, length = int(meta["num_sequences"]), int(meta["sequence_length"])
    rows = {"sequence": [], "position": [], "phase": [], "layer": [], "expert_ids": [], "weights": []}
    for s in range(num_sequences):
        for position in range(length):
            token = s * length + position
            phase = "prefill" if position < prompt_tokens else "decode"
            for layer, data in per.items():
                _append(
                    rows,
                    first_sequence + s,
                    position,
                    phase,
                    layer,
                    data["indices"][token].numpy(),
                    data["scores"][token].numpy(),
                )
    return rows


def _append(rows, sequence, position, phase, layer, ids, scores) -> None:
    rows["sequence"].append(sequence)
    rows["position"].append(position)
    rows["phase"].append(phase)
    rows["layer"].append(layer)
    rows["expert_ids"].append(np.asarray(ids, dtype=np.int64).tolist())
    rows["weights"].append(np.asarray(scores, dtype=np.float32).tolist())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="folder holding 'Sample routing traces/'")
    parser.add_argument("output", type=Path, help="Parquet file to write")
    parser.add_argument("--parts", choices=("both", "decoder", "encoder"), default="both")
    parser.add_argument(
        "--encoder-prompt-tokens",
        type=int,
        default=16,
        help="tokens of each encoder sequence replayed as one prefill pass (default 16)",
    )
    args = parser.parse_args(argv)
    root = args.source / "Sample routing traces"
    if not root.is_dir():
        print(f"convert: error: no 'Sample routing traces' folder in {args.source}", file=sys.stderr)
        return 2
    parts = []
    if args.parts in ("both", "decoder"):
        parts.append(decoder_rows(root))
    if args.parts in ("both", "encoder"):
        parts.append(encoder_rows(root, first_sequence=64, prompt_tokens=args.encoder_prompt_tokens))
    columns = {name: [v for part in parts for v in part[name]] for name in parts[0]}
    table = pa.table(columns).append_column("num_experts", pa.array([NUM_EXPERTS] * len(columns["layer"])))
    with atomic_file(args.output, "wb") as handle:  # a reader never sees half a file
        pq.write_table(table, handle)
    num_layers = len(set(columns["layer"]))
    num_tokens = table.num_rows // num_layers
    print(f"wrote {table.num_rows:,} rows ({num_tokens:,} tokens x {num_layers} MoE layers) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
