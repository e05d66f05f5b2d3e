"""The project's scripts (benchmarks/, examples/, scripts/) as modules, for tests that call their `main` in-process.

from tests.project_scripts import load_script
benchmark = load_script("benchmarks/simulator.py")
benchmark.main(["--sequences", "1"])
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]  # the repository


def load_script(relative: str) -> ModuleType:
    """The script at `relative` (a path from the repository root), imported fresh as a module of its own."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem + "_script", ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
