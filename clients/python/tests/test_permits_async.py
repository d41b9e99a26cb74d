"""The permit context manager and reports, asyncio client, against the real server."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest

import permitd
from permitd import Limit

from .conftest import run

RL_HEADERS = {"X-RateLimit-Limit": "7", "X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "30"}


def test_async_permit_grants_and_releases(target: str, client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 10, 60), Limit("tokens", 5000, 60)], concurrency=2)

    async def main() -> None:
        async with permitd.AsyncClient(target) as c:
            async with c.permit(res, cost={"tokens": 1200}, max_wait=5) as p:
                assert isinstance(p, permitd.AsyncPermit)
                assert p.remaining == {"requests": 9, "tokens": 3800}
                assert (await c.get_quota(res)).in_flight == 1
            assert p.done
            assert (await c.get_quota(res)).in_flight == 0

    run(main())


def test_async_permit_denied(target: str, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 1, 60)])

    async def main() -> None:
        async with permitd.AsyncClient(target) as c:
            await (await c.acquire(res)).release()
            with pytest.raises(permitd.PermitDenied) as ei:
                async with c.permit(res):
                    pytest.fail("the block must not run on a denial")
            assert ei.value.reason == "RATE_LIMITED" and ei.value.retry_after > 50

    run(main())


def test_async_queue_serves_waiters_in_turn(target: str, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 100, 60)], concurrency=1)

    async def main() -> None:
        async with permitd.AsyncClient(target) as c:
            order = []

            async def worker(i: int) -> None:
                async with c.permit(res, max_wait=10) as p:
                    order.append(i)
                    await asyncio.sleep(0.05)
                    await p.report(status=200)

            await asyncio.gather(*(worker(i) for i in range(4)))
            assert sorted(order) == [0, 1, 2, 3]
            assert (await c.get_quota(res)).granted_total == 4

    run(main())


def test_async_exception_refunds(target: str, client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 2, 60), Limit("tokens", 1000, 60)], concurrency=1)

    async def main() -> None:
        async with permitd.AsyncClient(target) as c:
            with pytest.raises(ZeroDivisionError):
                async with c.permit(res, cost={"tokens": 600}):
                    raise ZeroDivisionError("boom")
    run(main())
    q = client.get_quota(res)
    assert q.in_flight == 0 and q.remaining == {"requests": 2, "tokens": 1000}


def test_async_report_aiohttp_response(target: str, make_resource, upstream) -> None:
    res = make_resource(limits=[Limit("requests", 50, 60)])
    url = upstream.script(upstream.path(), (200, RL_HEADERS, {"ok": 1}))

    async def main() -> None:
        async with permitd.AsyncClient(target) as c, aiohttp.ClientSession() as http:
            async with c.permit(res) as p:
                async with http.get(url) as r:
                    out = await p.report(r)
            assert out.status == 200
            assert any(l.dimension == "requests" and l.limit == 7 for l in out.learned)

    run(main())


def test_async_report_httpx_response(target: str, make_resource, upstream) -> None:
    res = make_resource(limits=[Limit("requests", 50, 60)])
    url = upstream.script(upstream.path(), (200, RL_HEADERS, {"ok": 1}))

    async def main() -> None:
        async with permitd.AsyncClient(target) as c, httpx.AsyncClient() as http:
            async with c.permit(res) as p:
                out = await p.report(await http.get(url))
            assert any(l.limit == 7 for l in out.learned)

    run(main())


def test_async_aiohttp_error_in_block_is_reported(target: str, client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource()
    url = upstream.script(upstream.path(), (429, {"Retry-After": "2"}, {"error": "slow"}))

    async def main() -> None:
        async with permitd.AsyncClient(target) as c, aiohttp.ClientSession(raise_for_status=True) as http:
            with pytest.raises(aiohttp.ClientResponseError):
                async with c.permit(res):
                    async with http.get(url):
                        pass

    run(main())
    q = client.get_quota(res)
    assert q.upstream_429_total == 1 and q.in_flight == 0 and q.cooldown_until is not None


def test_async_unavailable(dead_target: str) -> None:
    async def main() -> None:
        async with permitd.AsyncClient(dead_target, timeout=5) as c:
            with pytest.raises(permitd.PermitdUnavailable):
                await c.acquire("any:thing")

    run(main())
