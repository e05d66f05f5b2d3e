"""Command-line conventions shared by `specmd-harvest`, `specmd-train` and `specmd-eval`.

    argv = normalize_options(sys.argv[1:], HarvestConfig)   # before jsonargparse parses it
    add_verbose_option(parser); quiet_libraries(verbose=namespace.pop("verbose"), progress=config.progress)

jsonargparse names options after dataclass fields (`--output_dir`) and wants a value for booleans; users
type `--output-dir` and bare `--overwrite`, or `--no-overwrite`. This accepts all three spellings, turns a bare
flag into `true` and `--no-NAME` into `--NAME false`.

By default a CLI shows its progress bars and its own lines only: library warnings and info lines (Lightning's
accelerator summary and litlogger tip, deprecations, dataloader advice) appear with `--verbose`, and
`--progress false` silences every bar, the libraries' too (transformers' "Loading weights", datasets').
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import fields

VERBOSE_HELP = "Also show the libraries' warnings and info lines (hidden by default)."


def config_parser(prog: str, config_class: type, description: str | None = None, **class_options):
    """The parser of every CLI: `--config` YAML, the config dataclass's fields as options (its docstring is the
    help), `--verbose`, and each boolean option's `--no-` form named in --help."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    description = description or config_class.__doc__.split("\n\n")[0]
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file of options (command line overrides it)")
    parser.add_class_arguments(config_class, **class_options)
    add_verbose_option(parser)
    document_flags(parser, config_class)
    return parser


def add_verbose_option(parser) -> None:
    """`--verbose` on a jsonargparse parser (outside the config dataclass: it changes no result)."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


def quiet_libraries(verbose: bool = False, progress: bool = True) -> None:
    """Hide library warnings and info lines unless `verbose`; hide every progress bar unless `progress`."""
    if not verbose:
        warnings.simplefilter("ignore")  # the project itself reports through its own lines, never warnings
        os.environ.setdefault("WANDB_SILENT", "true")  # W&B's banner; our "reports in ..." line says where
        # the project never logs through `logging`; a library that sets its own logger's level when it is
        # imported later (Lightning does, to INFO) would undo per-logger levels, so disable below ERROR globally
        logging.disable(logging.WARNING)
        import transformers

        transformers.logging.set_verbosity_error()
        import datasets

        datasets.logging.set_verbosity_error()
    if not progress:
        os.environ["TQDM_DISABLE"] = "1"  # every tqdm bar created from now on, whoever creates it
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()  # "Loading weights" and the hub's download bars
        datasets.disable_progress_bars()


def normalize_options(argv: list[str], config_class: type) -> list[str]:
    """Rewrite `--dashed-name` to the field's `--underscored_name`; a bare boolean flag gets `true`, and
    `--no-flag` (or `--no_flag`) becomes `--flag false`."""
    names = {f.name.replace("_", "-"): f.name for f in fields(config_class)}
    flags = {f.name for f in fields(config_class) if f.type in (bool, "bool")}
    negated = {f"--no-{flag.replace('_', '-')}" for flag in flags} | {f"--no_{flag}" for flag in flags}
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg in negated:
            out += [f"--{arg[5:].replace('-', '_')}", "false"]
            continue
        option, sep, value = arg.partition("=")
        if option.startswith("--") and option[2:] in names:
            option = f"--{names[option[2:]]}"
            arg = f"{option}{sep}{value}"
        out.append(arg)
        following = argv[i + 1].lower() if i + 1 < len(argv) else ""
        if option[2:] in flags and not sep and following not in ("true", "false"):
            out.append("true")
    return out


def option_name(field: str) -> str:
    """How users type a config field on the command line: `max_sequences` -> `--max-sequences`."""
    return "--" + field.replace("_", "-")


def check_at_least(field: str, value, minimum) -> None:
    """ValueError `--field must be at least M, got V` (None means unset and passes)."""
    if value is not None and value < minimum:
        raise ValueError(f"{option_name(field)} must be at least {minimum}, got {value!r}")


def check_between(field: str, value, low, high, low_open: bool = False) -> None:
    """ValueError unless low <= value <= high (low < value with low_open); None passes."""
    if value is None:
        return
    if value > high or value < low or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{option_name(field)} must be in {interval}, got {value!r}")


def document_flags(parser, config_class: type) -> None:
    """Name both spellings of every boolean option in its --help line: `--wandb / --no-wandb`."""
    flags = {f.name for f in fields(config_class) if f.type in (bool, "bool")}
    for action in parser._actions:
        if action.dest in flags:
            dashed = action.dest.replace("_", "-")
            action.help = f"{(action.help or '').rstrip()} Flags: --{dashed} / --no-{dashed}."
