"""Idempotency keys over the real Idempotency service, sync and async."""

from __future__ import annotations

import threading
import uuid

import aiohttp
import pytest
import requests

import permitd

from .conftest import require_service, run


@pytest.fixture(autouse=True)
def _needs_idempotency(client: permitd.Client) -> None:
    require_service(client, "Idempotency")


def key() -> str:
    return f"py-test-{uuid.uuid4().hex}"


def post_once(client: permitd.Client, k: str, url: str, payload: dict) -> permitd.Idempotent:
    with client.idempotent(k, fingerprint=payload) as op:
        if not op.replayed:
            op.complete(requests.post(url, json=payload, timeout=10))
    return op


def test_replay_makes_the_side_effect_once(client: permitd.Client, upstream) -> None:
    path = upstream.path()
    url = upstream.script(path, (201, {"Location": "/charges/1"}, {"charge": 1}))
    k, payload = key(), {"amount": 42, "currency": "EUR"}
    first = post_once(client, k, url, payload)
    second = post_once(client, k, url, payload)
    assert not first.replayed and second.replayed
    assert len(upstream.hits_of(path)) == 1
    r = second.result
    assert r is not None and r.status_code == 201 and r.json() == {"charge": 1}
    assert r.headers["location"] == "/charges/1"
    assert first.result == r


def test_fingerprint_mismatch(client: permitd.Client, upstream) -> None:
    k = key()
    post_once(client, k, upstream.url(upstream.path()), {"amount": 1})
    with pytest.raises(permitd.IdempotencyConflict):
        post_once(client, k, upstream.url(upstream.path()), {"amount": 2})


def test_exception_abandons_so_a_retry_runs(client: permitd.Client) -> None:
    k = key()
    with pytest.raises(ConnectionError):
        with client.idempotent(k, fingerprint="fp"):
            raise ConnectionError("upstream reset")
    with client.idempotent(k, fingerprint="fp", wait=0) as op:
        assert not op.replayed
        op.complete(status=200, body="done", metadata={"attempt": "2"})
    with client.idempotent(k, fingerprint="fp") as op:
        assert op.replayed and op.result is not None
        assert op.result.text == "done" and op.result.metadata == {"attempt": "2"}


def test_block_without_complete_still_counts_as_done(client: permitd.Client) -> None:
    k = key()
    with client.idempotent(k, fingerprint="fp"):
        pass
    with client.idempotent(k, fingerprint="fp") as op:
        assert op.replayed and op.result is not None and op.result.status_code == 0


def test_in_progress_waits_then_gives_up_or_replays(client: permitd.Client, target: str) -> None:
    k = key()
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with permitd.Client(target) as c2, c2.idempotent(k, fingerprint="fp") as op:
            holding.set()
            release.wait(10)
            op.complete(status=200, body=b"from the holder")

    t = threading.Thread(target=holder)
    t.start()
    assert holding.wait(10)
    with pytest.raises(permitd.IdempotencyInProgress):
        with client.idempotent(k, fingerprint="fp", wait=0.2):
            pytest.fail("must not run while another worker holds the key")
    release.set()
    with client.idempotent(k, fingerprint="fp", wait=10) as op:
        assert op.replayed and op.result is not None and op.result.body == b"from the holder"
    t.join(10)


def test_async_replay_with_aiohttp(target: str, upstream) -> None:
    path = upstream.path()
    url = upstream.script(path, (201, {}, {"charge": 7}))
    k, payload = key(), {"amount": 7}

    async def attempt(c: permitd.AsyncClient, http: aiohttp.ClientSession) -> permitd.AsyncIdempotent:
        async with c.idempotent(k, fingerprint=payload) as op:
            if not op.replayed:
                async with http.post(url, json=payload) as r:
                    await op.complete(r)  # the body is read from the aiohttp response
        return op

    async def main() -> None:
        async with permitd.AsyncClient(target) as c, aiohttp.ClientSession() as http:
            first = await attempt(c, http)
            second = await attempt(c, http)
            assert not first.replayed and second.replayed
            assert second.result is not None and second.result.json() == {"charge": 7}
            with pytest.raises(permitd.IdempotencyConflict):
                async with c.idempotent(k, fingerprint={"amount": 8}):
                    pass
            k2 = key()
            with pytest.raises(OSError):
                async with c.idempotent(k2, fingerprint="x"):
                    raise OSError("reset")
            async with c.idempotent(k2, fingerprint="x", wait=0) as op:
                assert not op.replayed
                await op.complete(status=204)

    run(main())
    assert len(upstream.hits_of(path)) == 1
