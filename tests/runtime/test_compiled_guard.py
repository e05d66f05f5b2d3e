"""The optional compiled build: a stale extension never shadows its edited .py; a failed build still installs.

Run: pytest tests/runtime/test_compiled_guard.py
`runtime.compiled.guard()` (called by runtime/__init__) routes a module whose extension was not built from its
current source to the .py; setup.py records the sources it compiled and never fails the install.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from runtime import compiled

REPO = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _tree(root: Path, module: str, source: str) -> Path:
    path = compiled.source_of(module, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:  # packages all the way down
        if parent != Path("."):
            (root / parent / "__init__.py").touch()
    path.write_text(source)
    return path


def test_stale_means_an_extension_not_built_from_the_current_source(tmp_path, monkeypatch):
    monkeypatch.setattr(compiled, "COMPILED_MODULES", ("runtime.expert_cache", "runtime.driver"))
    source = _tree(tmp_path, "runtime.expert_cache", "X = 1\n")
    _tree(tmp_path, "runtime.driver", "Y = 1\n")
    assert compiled.stale_modules(tmp_path) == []  # no extension: the sources run, nothing to guard
    Path(f"{source.with_suffix('')}{SUFFIX}").write_bytes(b"not really an extension")
    assert compiled.stale_modules(tmp_path) == ["runtime.expert_cache"]  # no record: stale
    record = {"runtime.expert_cache": compiled.source_digest(source)}
    (tmp_path / "runtime" / compiled.RECORD_NAME).write_text(json.dumps(record))
    assert compiled.stale_modules(tmp_path) == []  # built from this very source
    source.write_text("X = 2\n")
    assert compiled.stale_modules(tmp_path) == ["runtime.expert_cache"]  # edited since


def test_guard_imports_the_source_of_a_stale_extension(tmp_path, monkeypatch):
    module = "c8_guard_pkg.core"
    monkeypatch.setattr(compiled, "COMPILED_MODULES", (module,))
    source = _tree(tmp_path, module, "WHERE = 'source'\n")
    Path(f"{source.with_suffix('')}{SUFFIX}").write_bytes(b"garbage: importing this would fail")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = list(sys.meta_path)
    try:
        with pytest.warns(UserWarning, match="c8_guard_pkg.core predate their .py sources"):
            assert compiled.guard(tmp_path) == [module]
        imported = __import__(module, fromlist=["WHERE"])
        assert imported.WHERE == "source"
        assert imported.__spec__.origin == str(source)
    finally:
        sys.meta_path[:] = before
        for name in (module, module.split(".")[0]):
            sys.modules.pop(name, None)


def test_a_fresh_build_is_what_runs():
    """Where this tree was built (`pip install -e .` with Cython and a C compiler, as CI does), every module the
    build recorded is imported compiled; elsewhere (a tree never built) nothing is, and the sources run."""
    import runtime.driver  # noqa: F401  (the lean path's modules)
    import runtime.expert_cache  # noqa: F401
    import runtime.policies  # noqa: F401

    record = compiled.read_record()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stale = compiled.stale_modules()
    fresh = sorted(m for m in record if m not in stale and compiled.extensions_of(m))
    assert sorted(compiled.compiled_modules()) == fresh


@pytest.mark.slow
def test_a_failed_compile_still_installs_and_records_nothing(tmp_path):
    pytest.importorskip("Cython")
    pytest.importorskip("setuptools")
    for name in ["setup.py", "pyproject.toml", "README.md", "runtime/compiled.py"] + [
        str(compiled.source_of(m, Path("."))) for m in compiled.COMPILED_MODULES
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    old_record = tmp_path / "runtime" / compiled.RECORD_NAME
    old_record.write_text('{"runtime.driver": "from an earlier build"}')
    env = {**os.environ, "CC": str(tmp_path / "no-such-compiler"), "LDSHARED": str(tmp_path / "no-such-compiler")}
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "runs interpreted" in result.stderr
    assert not old_record.exists()  # the old record no longer vouches for anything
    assert not list(tmp_path.rglob(f"*{SUFFIX}"))
