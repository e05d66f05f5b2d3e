"""Print the README's file tree: every tracked file, one line each, with the first line of its docstring.

    python scripts/readme_file_tree.py          # paste between the ``` fences of README.md's "Files" section

The family adapters in specmd_predict/adapters/ are counted rather than listed (each reads like olmoe.py), and
the embedded model's data files are one line. Non-Python files take their comment from NOTES below.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = "specmd_predict/adapters/"
KEPT_ADAPTERS = {"__init__.py", "base.py", "olmoe.py"}
EMBEDDED = "specmd_predict/embedded_model/"
NOTES = {
    "examples/routing_trace.jsonl": "A 10-line external routing trace in the `--trace` schema (2 sequences, 2 MoE "
    "layers, top-2 of 8).",
    "docs/hit_rate_vs_capacity.png": "The README's results figure: `specmd-eval`'s hit-rate plot of the main job.",
    "docs/results/least_stale.md": "Measured results, detail: least-stale-predicted's next use, calibration and "
    "trust in predictions.",
    "docs/results/policies.md": "Measured results, detail: the cost of an eviction policy's victim() call.",
    "docs/results/predictors.md": "Measured results, detail: how the predictor defaults were reached, decode traces, "
    "next token, next use, cost.",
    "docs/results/runtime.md": "Measured results, detail: the runtime's hot path on CPU, host work per MoE layer, the "
    "default eviction.",
    "docs/results/simulator.md": "Measured results, detail: where the simulator's time goes.",
    "docs/results/traces.md": "Measured results, detail: prefill vs decode, real one-token passes, FLAME-MoE-290M with "
    "learned prefetch.",
    "docs/runtime_sweep_h200_rerun.json": "The shorter rerun of the H200 runtime sweep after the id-keyed cache "
    "core (README, H200 section).",
    "docs/runtime_sweep_h200.json": "The runtime sweep measured on an NVIDIA H200 (README, H200 section): every row "
    "and decode step.",
    "benchmarks/gpu_check.sh": "Every GPU check in one budgeted command: the GPU tests, then the runtime sweep.",
    EMBEDDED: "The embedded model's weights, config, tokenizer and training record (see its README.md).",
}


def first_docstring_line(path: Path) -> str | None:
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    return docstring.strip().splitlines()[0] if docstring else None


def tree_lines() -> tuple[list[str], int]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    lines, num_adapters, embedded_done = [], 0, False
    for name in sorted(files):
        if name.startswith(ADAPTERS) and Path(name).name not in KEPT_ADAPTERS:
            num_adapters += 1
            continue
        if name.startswith(EMBEDDED):
            if not embedded_done:
                lines.append(f"{EMBEDDED}  # {NOTES[EMBEDDED]}")
                embedded_done = True
            continue
        note = first_docstring_line(ROOT / name) if name.endswith(".py") else NOTES.get(name)
        lines.append(f"{name}  # {note}" if note else name)
    return lines, num_adapters


def main() -> None:
    lines, num_adapters = tree_lines()
    print(f"One line per file (the {num_adapters} family adapters in `{ADAPTERS}` follow `olmoe.py`):\n")
    print("```")
    print("\n".join(lines))
    print("```")


if __name__ == "__main__":
    main()
