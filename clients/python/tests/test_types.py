"""The package is typed (PEP 561): py.typed ships, and mypy --strict passes on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import permitd

from .conftest import PY_ROOT


def test_py_typed_is_installed() -> None:
    assert (Path(permitd.__file__).parent / "py.typed").is_file()


def test_mypy_strict(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path), "src/permitd"],
        cwd=PY_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
