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


def test_errors_pickle_intact() -> None:
    """Errors cross processes (Celery results, multiprocessing) as what they are."""
    import pickle

    import permitd

    for e in [
        permitd.PermitDenied("r", "p", "RATE_LIMITED", 1.5),
        permitd.IdempotencyConflict("k"),
        permitd.IdempotencyInProgress("k", 2.0),
        permitd.NotFound("gone", code="NOT_FOUND"),
        permitd.RetriesExhausted("r", 3, 429),
    ]:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.__dict__ == e.__dict__
