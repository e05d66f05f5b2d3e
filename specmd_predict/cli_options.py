"""Command-line conventions shared by `specmd-harvest`, `specmd-train` and `specmd-eval`.

    argv = normalize_options(sys.argv[1:], HarvestConfig)   # before jsonargparse parses it

jsonargparse names options after dataclass fields (`--output_dir`) and wants a value for booleans; users
type `--output-dir` and bare `--overwrite`. This accepts both spellings and turns a bare flag into `true`.
"""

from __future__ import annotations

from dataclasses import fields


def normalize_options(argv: list[str], config_class: type) -> list[str]:
    """Rewrite `--dashed-name` to the field's `--underscored_name`; a bare boolean flag gets `true`."""
    names = {f.name.replace("_", "-"): f.name for f in fields(config_class)}
    flags = {f.name for f in fields(config_class) if f.type in (bool, "bool")}
    out: list[str] = []
    for i, arg in enumerate(argv):
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
