"""permitd.langchain: LangChain chat models in two processes share one permitd limit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Callable, List

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

import permitd
from permitd import Limit
from permitd.langchain import PermitdRateLimiter

from .conftest import PY_ROOT, run


def conforms(times: List[float], rate: float, burst: int, jitter: float = 0.05) -> List[str]:
    """Every stretch of calls fits the token bucket (``burst`` + ``rate`` per second), with
    ``jitter`` seconds for the time between permitd's grant and the call."""
    t = sorted(times)
    bad = []
    for i in range(len(t)):
        for j in range(i + burst, len(t)):
            allowed = burst + rate * (t[j] - t[i] + jitter)
            if j - i + 1 > allowed + 1e-9:
                bad.append(f"{j - i + 1} calls in {t[j] - t[i]:.3f}s")
    return bad


def test_two_processes_share_one_limit(target: str, make_resource: Callable[..., str]) -> None:
    rate, calls = 10, 25
    res = make_resource(limits=[Limit("requests", rate, 1), Limit("tokens", 100_000, 60)])
    start = time.time() + 3.0  # after both have imported langchain
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.workers.lc_worker", target, res, str(calls), str(start)],
            cwd=PY_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    times: List[float] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        times += json.loads(out.strip().splitlines()[-1])
    assert len(times) == 2 * calls
    took = max(times) - min(times)
    print(f"langchain: {len(times)} calls from 2 processes in {took:.2f}s at {rate}/s (burst {rate})")
    # Together, not each: two per-process limiters of 10/s would finish in half the time.
    assert not conforms(times, rate, rate), conforms(times, rate, rate)[:5]
    assert took >= (2 * calls - rate) / rate * 0.9
    # The cost hook's tokens were taken too.
    q = {d.dimension: d for d in permitd.Client(target).get_quota(res).dimensions}
    assert q["tokens"].remaining <= 100_000 - 10 * 2 * calls + 100_000 / 60 * (took + 5)


def test_async_and_non_blocking(target: str, make_resource: Callable[..., str]) -> None:
    res = make_resource(limits=[Limit("requests", 2, 3600)])
    with permitd.Client(target) as pd:
        limiter = PermitdRateLimiter(pd, res, max_wait=1)
        assert limiter.acquire(blocking=False)
        model = FakeListChatModel(responses=["ok"], rate_limiter=limiter)

        async def main() -> None:
            assert (await model.ainvoke("hi")).content == "ok"

        run(main())
        assert not limiter.acquire(blocking=False)  # the hour's two are used
        async def nb() -> bool:
            async with permitd.AsyncClient(target) as apd:
                return await PermitdRateLimiter(pd, res, async_client=apd).aacquire(blocking=False)

        assert not run(nb())
    with pytest.raises(TypeError):
        PermitdRateLimiter("not a client", res)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PermitdRateLimiter(pd, "bad name!")


