"""CLI conventions shared by the three commands: option spellings, `--no-` flags, and --help naming both forms."""

from __future__ import annotations

import re
from dataclasses import dataclass

from jsonargparse import ArgumentParser

from specmd_predict.cli_options import document_flags, normalize_options


@dataclass
class Options:
    """Test options.

    Args:
        output_dir: where.
        wandb: log to W&B.
        keep_router_logits: keep them.
    """

    output_dir: str = "out"
    wandb: bool = True
    keep_router_logits: bool = False


def test_spellings_of_flags():
    assert normalize_options(["--output-dir", "x", "--keep-router-logits"], Options) == [
        "--output_dir", "x", "--keep_router_logits", "true"]  # fmt: skip
    assert normalize_options(["--no-wandb", "--no_keep_router_logits"], Options) == [
        "--wandb", "false", "--keep_router_logits", "false"]  # fmt: skip
    assert normalize_options(["--no-output-dir"], Options) == ["--no-output-dir"]  # not a flag: left to the parser


def test_help_names_the_no_form_of_every_boolean_option():
    parser = ArgumentParser(prog="t")
    parser.add_class_arguments(Options)
    document_flags(parser, Options)
    text = " ".join(re.sub(r"-\n\s*", "-", parser.format_help()).split())  # undo argparse's line wrapping
    assert "--wandb / --no-wandb" in text and "--keep-router-logits / --no-keep-router-logits" in text
    assert "--no-output-dir" not in text
    namespace = parser.parse_args(normalize_options(["--no-wandb"], Options))
    assert namespace.wandb is False
