"""Watching quota updates, sync and async."""

from __future__ import annotations

import asyncio
import threading

import permitd
from permitd import Limit

from .conftest import run


def test_watch_snapshot_then_changes(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 10, 60)])
    timer = None
    with client.watch(res, min_interval=0.01) as w:
        timer = threading.Timer(20, w.close)  # bounded: never hang the suite
        timer.start()
        first = next(w)
        assert first.resource == res and first.granted_total == 0
        assert first.remaining == {"requests": 10}
        client.acquire(res).report(status=200)
        seen = None
        for u in w:
            if u.granted_total == 1 and u.in_flight == 0:
                seen = u
                break
        assert seen is not None and seen.remaining["requests"] == 9
    timer.cancel()
    assert list(w) == []  # closed


def test_watch_prefix_only_matching(client: permitd.Client, make_resource) -> None:
    a = make_resource()
    b = make_resource()
    with client.watch(a) as w:
        timer = threading.Timer(20, w.close)
        timer.start()
        client.acquire(b).release()
        client.acquire(a).release()
        names = set()
        for u in w:
            names.add(u.resource)
            if u.granted_total >= 1:
                break
        timer.cancel()
    assert names == {a}


def test_async_watch(target: str, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 10, 60)])

    async def main() -> None:
        async with permitd.AsyncClient(target) as c:
            async with c.watch(res, min_interval=0.01) as w:
                first = await w.__anext__()
                assert first.resource == res and first.granted_total == 0

                async def grant() -> None:
                    await asyncio.sleep(0.05)
                    await (await c.acquire(res)).report(status=200)

                task = asyncio.ensure_future(grant())
                async for u in w:
                    if u.granted_total == 1 and u.in_flight == 0:
                        break
                await task
            # Closed: iteration ends.
            assert [u async for u in w] == []

    run(main(), timeout=20)
