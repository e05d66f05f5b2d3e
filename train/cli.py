"""`specmd-train`: train expert predictors on a harvest, export a bank, print validation recall@K.

    specmd-train                                          # embedded default, end to end (harvests first)
    specmd-train --config train/configs/default.yaml --kind lowrank --rank 128
    specmd-train --harvest_path outputs/harvests/embedded-1a2b3c4d --no-wandb
    specmd-train --print_config > my.yaml                 # a full config to edit

Every option is a field of `train.config.TrainConfig` (its docstring is the --help text). Bad input
prints one line and exits with status 2, no traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import ActionConfigFile, ArgumentParser

from specmd_predict.cli_options import normalize_options
from train.config import TrainConfig


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="specmd-train",
        description="Train a bank of expert predictors on a harvest and export it. "
        "--no-wandb: log to CSV instead of offline W&B.",
        exit_on_error=True,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (CLI options override it).")
    parser.add_class_arguments(TrainConfig, as_group=False)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = ["--wandb=false" if a in ("--no-wandb", "--no_wandb") else a for a in argv]
    argv = normalize_options(argv, TrainConfig)
    parser = build_parser()
    namespace = parser.parse_args(argv)
    namespace.pop("config", None)
    return TrainConfig(**parser.instantiate(namespace).as_dict())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(argv)
    except ValueError as err:  # e.g. HarvestConfig's own checks
        print(f"specmd-train: error: {err}", file=sys.stderr)
        return 2
    from train.run import train_predictors

    try:
        train_predictors(config)
    except (ValueError, FileNotFoundError) as err:
        print(f"specmd-train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("specmd-train: interrupted (no bank was written unless it was announced)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
