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
