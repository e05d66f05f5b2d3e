"""Optional compiled build: `pip install -e .` compiles runtime.compiled.COMPILED_MODULES with Cython when it can.

Metadata lives in pyproject.toml; this file only adds the extensions. Everything here is optional: without Cython,
or when a compile fails (no C compiler), the package installs anyway and those modules run interpreted from the
same .py files. Each extension that compiles gets the sha256 of its source recorded in runtime/_compiled.json
(cleared first), which `runtime.compiled.guard()` checks at import so a stale extension never shadows an edited
source.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
# runtime/compiled.py by path: importing the `runtime` package here would pull in torch
_spec = importlib.util.spec_from_file_location("_specmd_compiled", HERE / "runtime" / "compiled.py")
compiled = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compiled)
RECORD = HERE / "runtime" / compiled.RECORD_NAME


class OptionalBuildExt(build_ext):
    """Build what compiles, record what was built, never fail the install."""

    def run(self) -> None:
        RECORD.unlink(missing_ok=True)  # a failed build must not leave an old record vouching for old extensions
        self.built: dict[str, str] = {}
        try:
            super().run()
        except Exception as err:  # e.g. no C compiler at all
            print(f"specmd-predict: compiled modules not built ({err}); they run interpreted", file=sys.stderr)
        if self.built:  # beside the extensions: the source tree in place (editable), else the built package (wheel)
            record = RECORD if self.inplace else Path(self.build_lib) / "runtime" / compiled.RECORD_NAME
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(self.built, indent=1, sort_keys=True) + "\n")

    def copy_extensions_to_source(self) -> None:
        """In place (the editable install): copy only what compiled, so the record matches the files beside it."""
        every = self.extensions
        self.extensions = [ext for ext in every if ext.name in self.built]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = every

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as err:
            print(f"specmd-predict: {ext.name} not compiled ({err}); it runs interpreted", file=sys.stderr)
            return
        self.built[ext.name] = compiled.source_digest(compiled.source_of(ext.name, HERE))


def extensions() -> list:
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("specmd-predict: Cython not found; the runtime's core runs interpreted", file=sys.stderr)
        return []
    from setuptools import Extension

    modules = [
        Extension(name, [str(compiled.source_of(name, HERE).relative_to(HERE))]) for name in compiled.COMPILED_MODULES
    ]
    try:
        return cythonize(
            modules,
            build_dir="build/cython",  # generated C stays out of the source tree
            language_level=3,
            quiet=True,
            # plain Python annotations stay documentation (a compiled `x: int` would reject what the .py accepts).
            # No "memoryview is initialized" test per access: every typed array is assigned in its object's
            # constructor or bind step before any hook reads it, and the test was 8% of least-stale-predicted's
            # instructions (docs/results/simulator.md, "memoryview checks")
            compiler_directives={"annotation_typing": False, "binding": True, "initializedcheck": False},
        )
    except Exception as err:  # a Cython error must not fail the install either
        print(f"specmd-predict: cythonize failed ({err}); the runtime's core runs interpreted", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
