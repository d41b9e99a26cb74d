"""The committed generated code in src/permitd/v1/ must match the repo's proto/: this
regenerates it into a temporary directory with scripts/gen.sh and compares every file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import PY_ROOT

GENERATED = PY_ROOT / "src" / "permitd" / "v1"


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(PY_ROOT / "scripts" / "gen.sh"), str(tmp_path)], check=True, env=env, timeout=300)
    fresh = tmp_path / "permitd" / "v1"
    want = sorted(p.name for p in fresh.iterdir() if p.is_file())
    have = sorted(p.name for p in GENERATED.iterdir() if p.is_file())
    assert have == want, "generated files differ: run clients/python/scripts/gen.sh"
    stale = [n for n in want if (fresh / n).read_bytes() != (GENERATED / n).read_bytes()]
    assert not stale, f"stale generated code {stale}: run clients/python/scripts/gen.sh and commit"
    assert len(want) >= 15  # five protos, three files each, and __init__.py
