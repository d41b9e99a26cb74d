"""The retry helper, sync and async: permitd's advice (Retry-After, backoff policy,
attempts) drives every retry."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
import requests

import permitd
from permitd import Backoff, Limit

from .conftest import run

FAST = Backoff(kind="exponential", base=0.05, max=0.2, max_attempts=3)


def test_call_honours_retry_after(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource(backoff=FAST)
    path = upstream.path()
    url = upstream.script(path, (429, {"Retry-After": "1"}, {"error": "slow"}), (200, {}, {"ok": True}))
    r = client.call(res, requests.get, url, timeout=10)
    assert r.status_code == 200 and r.json() == {"ok": True}
    hits = upstream.hits_of(path)
    assert len(hits) == 2
    # The policy alone would wait 50 ms: the upstream's Retry-After (1 s) won.
    assert hits[1].at - hits[0].at >= 0.95


def test_call_gives_up_after_the_policy_attempts(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource(backoff=FAST)
    path = upstream.path()
    url = upstream.script(path, (503, {}, {"error": "down"}))
    with pytest.raises(permitd.RetriesExhausted) as ei:
        client.call(res, requests.get, url, timeout=10)
    e = ei.value
    assert e.attempts == 3 and e.status == 503
    assert isinstance(e.last_response, requests.Response) and e.last_response.status_code == 503
    assert len(upstream.hits_of(path)) == 3


def test_call_max_attempts_caps_the_policy(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource(backoff=FAST)
    path = upstream.path()
    url = upstream.script(path, (502, {}, b"bad gateway"))
    with pytest.raises(permitd.RetriesExhausted) as ei:
        client.call(res, requests.get, url, timeout=10, max_attempts=2)
    assert ei.value.attempts == 2 and len(upstream.hits_of(path)) == 2


def test_call_returns_non_retryable_answers(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource(backoff=FAST)
    path = upstream.path()
    url = upstream.script(path, (404, {}, {"error": "no such thing"}))
    r = client.call(res, requests.get, url, timeout=10)
    assert r.status_code == 404 and len(upstream.hits_of(path)) == 1


def test_call_retries_network_errors(client: permitd.Client, make_resource, dead_target: str) -> None:
    res = make_resource(backoff=FAST)
    with pytest.raises(permitd.RetriesExhausted) as ei:
        client.call(res, requests.get, f"http://{dead_target}/", timeout=5)
    e = ei.value
    assert e.attempts == 3 and e.status == 0 and e.last_response is None
    assert isinstance(e.last_exception, requests.ConnectionError)
    assert e.__cause__ is e.last_exception


def test_call_other_exceptions_refund_and_propagate(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 5, 60)])

    def broken() -> None:
        raise LookupError("a bug, not a network error")

    with pytest.raises(LookupError):
        client.call(res, broken)
    assert client.get_quota(res).remaining["requests"] == 5


def test_call_reconciles_actual_cost(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource(limits=[Limit("requests", 10, 60), Limit("tokens", 10_000, 3600)])
    url = upstream.script(upstream.path(), (200, {}, {"usage": {"total_tokens": 321}}))
    r = client.call(
        res, requests.get, url, timeout=10,
        cost={"tokens": 2000},
        actual_cost=lambda r: {"tokens": r.json()["usage"]["total_tokens"]},
    )
    assert r.status_code == 200
    # 2 000 acquired, 321 used: the difference is refunded (plus what refilled meanwhile,
    # about 3 tokens a second at 10 000 per hour).
    left = client.get_quota(res).remaining["tokens"]
    assert 10_000 - 321 <= left <= 10_000 - 321 + 30


def test_call_httpx(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource(backoff=FAST)
    path = upstream.path()
    url = upstream.script(path, (503, {"Retry-After": "0.3"}, b""), (200, {}, {"ok": 1}))
    with httpx.Client() as http:
        r = client.call(res, http.get, url)
    assert r.status_code == 200 and len(upstream.hits_of(path)) == 2


def test_async_call_honours_retry_after(target: str, make_resource, upstream) -> None:
    res = make_resource(backoff=FAST)
    path = upstream.path()
    url = upstream.script(path, (429, {"Retry-After": "1"}, {"error": "slow"}), (200, {}, {"ok": True}))

    async def main() -> None:
        async with permitd.AsyncClient(target) as c, aiohttp.ClientSession() as http:

            async def fetch() -> aiohttp.ClientResponse:
                async with http.get(url) as r:
                    await r.read()
                    return r

            r = await c.call(res, fetch)
            assert r.status == 200

    run(main())
    hits = upstream.hits_of(path)
    assert len(hits) == 2 and hits[1].at - hits[0].at >= 0.95


def test_async_call_gives_up(target: str, make_resource, upstream) -> None:
    res = make_resource(backoff=FAST)
    path = upstream.path()
    url = upstream.script(path, (503, {}, {"error": "down"}))

    async def main() -> None:
        async with permitd.AsyncClient(target) as c, httpx.AsyncClient() as http:
            with pytest.raises(permitd.RetriesExhausted) as ei:
                await c.call(res, http.get, url)
            assert ei.value.attempts == 3
            assert ei.value.last_response.status_code == 503

    run(main())
    assert len(upstream.hits_of(path)) == 3
