"""`specmd-train`: train expert predictors on a harvest, export a bank, print validation recall@K.

    specmd-train                                          # embedded default, end to end (harvests first)
    specmd-train --config train/configs/default.yaml --kind lowrank --rank 128
    specmd-train --harvest-path outputs/harvests/embedded-1a2b3c4d --no-wandb --progress false
    specmd-train --print_config > my.yaml                 # a full config to edit
    specmd-train --name mine                              # after a crash or kill: the same command resumes it
    specmd-train --name mine --resume false               # start over (the earlier run is moved aside)

Every option is a field of `train.config.TrainConfig` (its docstring is the --help text); a boolean option
also takes its `--no-` form. Library warnings and info lines appear only with --verbose. Bad input prints one
line and exits with status 2, no traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser

from specmd_predict.cli_options import config_parser, normalize_options, quiet_libraries
from train.config import TrainConfig


def build_parser() -> ArgumentParser:
    description = "Train a bank of expert predictors on a harvest and export it."
    return config_parser("specmd-train", TrainConfig, description, as_group=False)


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    argv = normalize_options(list(sys.argv[1:] if argv is None else argv), TrainConfig)
    parser = build_parser()
    namespace = parser.parse_args(argv)
    namespace.pop("config", None)
    verbose = namespace.pop("verbose")
    config = TrainConfig(**parser.instantiate(namespace).as_dict())
    quiet_libraries(verbose=verbose, progress=config.progress)
    return config


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
        print(
            "specmd-train: interrupted (no bank was written unless it was announced); "
            "the same command resumes from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
