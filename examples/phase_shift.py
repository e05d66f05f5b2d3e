"""Prefill vs decode shift: train one predictor on prefill rows and one on decode rows of a generation-mode
harvest, then let `specmd-eval` judge both (and the baselines) on both phases.

    python examples/phase_shift.py                                    # embedded model, small settings
    python examples/phase_shift.py --harvest outputs/harvests/embedded-1a2b3c4d --max-epochs 4

Without --harvest it makes (or reuses) `specmd-harvest --mode generate` on the embedded model with
--prompt-tokens, --new-tokens and --max-tokens. Each bank is trained with the project's train API
(`train.run.train_predictors`) on `data_pipelines.generate.phase_view(harvest, phase)`, exported under
--output-dir/banks/, and `specmd-eval --harvest ... --banks [...] --cache false` prints the predictor table
and the shift table (validation split; reports under --output-dir/eval/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from data_pipelines import HarvestConfig, ensure_harvest, load_harvest
from data_pipelines.generate import PHASES, phase_view


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--harvest", type=Path, default=None, help="a generate-mode harvest (default: make one)")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128 * 96, help="96 sequences of 64 + 64 by default")
    parser.add_argument("--kind", default="residual", help="predictor kind (specmd-train --kind)")
    parser.add_argument("--horizon", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/phase_shift"))
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)

    from eval.cli import EvalConfig, run
    from train.config import TrainConfig
    from train.run import train_predictors

    path = args.harvest or ensure_harvest(
        HarvestConfig(mode="generate", prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                      max_tokens=args.max_tokens, progress=args.progress,
                      validation_fraction=0.1)  # the README's numbers: 10 validation prompts (0.05 is the default)
    )  # fmt: skip
    harvest = load_harvest(path)
    if harvest.manifest.get("mode") != "generate":
        raise SystemExit(f"phase_shift: {path} is not a --mode generate harvest")
    banks = []
    for phase in PHASES:
        config = TrainConfig(
            harvest_path=str(path), kind=args.kind, horizon=args.horizon, max_epochs=args.max_epochs,
            name=f"trained-on-{phase}", bank_dir=str(args.output_dir / "banks" / f"trained-on-{phase}"),
            output_dir=str(args.output_dir / "train"), wandb=False, progress=args.progress,
        )  # fmt: skip
        banks.append(str(train_predictors(config, harvest=phase_view(harvest, phase)).bank_path))
    return run(
        EvalConfig(harvest=str(path), banks=banks, horizon=args.horizon, cache=False,
                   output_dir=str(args.output_dir / "eval"), wandb=False, progress=args.progress),
        use_wandb=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
