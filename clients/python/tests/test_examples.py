"""Every example runs end to end against the real permitd and the fake upstream, started as
its own process (python examples/fake_upstream.py PORT)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

import pytest

from .conftest import PY_ROOT, free_port

EXAMPLES = PY_ROOT / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.py") if p.stem != "fake_upstream")


@pytest.fixture
def fake_upstream() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "fake_upstream.py"), str(port)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{url}/stats", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_there_are_four_examples() -> None:
    assert NAMES == ["cached_predictions", "github_learned_limits", "idempotent_charges", "openai_worker_pool"]


@pytest.mark.parametrize("name", NAMES)
def test_example_runs(name: str, target: str, fake_upstream: str) -> None:
    env = dict(os.environ, PERMITD_TARGET=target, UPSTREAM_URL=fake_upstream)
    p = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, f"{name} failed:\n{p.stdout}\n{p.stderr}"
    result = [l for l in p.stdout.splitlines() if l.startswith(f"RESULT {name} ")]
    assert result, p.stdout
    print(result[0])
