"""Which runtime modules are compiled (Cython) at `pip install -e .`, and the guard that keeps a stale build out.

    COMPILED_MODULES                 # read by setup.py: the modules it tries to compile, each from its own .py
    guard()                          # runtime/__init__ calls it first: a compiled module whose .py changed since
                                     # its build is imported from the .py instead, with one warning

Why a guard: an editable install builds the extensions in place, next to their sources, and Python's import system
prefers an extension to a .py of the same name. After the .py is edited (or a rebuild fails, which still installs),
the old extension would keep running (docs/results/simulator.md, "packaging"). So the build records the sha256 of
each source it compiled (`RECORD_NAME`, beside this file, ignored by git; cleared before each build, so a failed
build records nothing) and `guard()` compares it with the source at import. Compiling is optional: a tree that was
never built (another worktree on PYTHONPATH, a machine given only the working tree) finds no extension and runs the
same .py interpreted, with the same counters.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import sys
import warnings
from pathlib import Path

# The modules compiled together: the books, the driver and every eviction policy (the list and heap policies by id;
# least-stale-predicted on its ExpertKey path, its state a typed extension type: docs/results/simulator.md).
COMPILED_MODULES = (
    "runtime.expert_cache",
    "runtime.driver",
    "runtime.policies.fifo",
    "runtime.policies.lru",
    "runtime.policies.layer_recency",
    "runtime.policies.fld",
    "runtime.policies.least_stale",
    "runtime.policies.id_heap",
    "runtime.policies.lfu",
    "runtime.policies.score",
    "runtime.policies.belady",
    "runtime.policies.least_stale_predicted",
)
RECORD_NAME = "_compiled.json"  # {module: sha256 of the .py it was compiled from}
ROOT = Path(__file__).resolve().parent.parent  # the folder holding the `runtime` package


def source_of(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extensions_of(module: str, root: Path = ROOT) -> list[Path]:
    """Compiled files for `module` beside its source (any extension suffix this interpreter would import)."""
    source = source_of(module, root)
    stem = source.with_suffix("")
    return [p for suffix in importlib.machinery.EXTENSION_SUFFIXES if (p := Path(f"{stem}{suffix}")).exists()]


def read_record(root: Path = ROOT) -> dict[str, str]:
    try:
        record = json.loads((root / "runtime" / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def stale_modules(root: Path = ROOT) -> list[str]:
    """Modules with a compiled file beside them that was not built from their current source."""
    record = read_record(root)
    return [
        module
        for module in COMPILED_MODULES
        if extensions_of(module, root) and record.get(module) != source_digest(source_of(module, root))
    ]


def compiled_modules() -> list[str]:
    """Those of COMPILED_MODULES imported from an extension (the rest run interpreted)."""
    return [
        m
        for m in COMPILED_MODULES
        if m in sys.modules and isinstance(sys.modules[m].__spec__.loader, importlib.machinery.ExtensionFileLoader)
    ]


class _SourceFirst:
    """A meta-path finder that imports the named modules from their .py, passing over a stale extension."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(self, fullname, path=None, target=None):
        source = self.sources.get(fullname)
        if source is None:
            return None
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)


def guard(root: Path = ROOT) -> list[str]:
    """Route imports of stale compiled modules to their sources (before anything imports them); returns them."""
    stale = stale_modules(root)
    if stale and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst({m: source_of(m, root) for m in stale}))
        warnings.warn(
            f"compiled {', '.join(stale)} predate their .py sources: running the sources interpreted "
            "(pip install -e . rebuilds them)",
            stacklevel=2,
        )
    return stale
