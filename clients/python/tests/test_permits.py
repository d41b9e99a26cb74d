"""The permit context manager and reports, sync client, against the real server."""

from __future__ import annotations

import time

import httpx
import pytest
import requests

import permitd
from permitd import Limit

RL_HEADERS = {"X-RateLimit-Limit": "7", "X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "30"}


def test_permit_grants_and_releases_on_exit(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 10, 60), Limit("tokens", 5000, 60)], concurrency=2)
    with client.permit(res, cost={"tokens": 1200}, max_wait=5) as p:
        assert isinstance(p, permitd.Permit)
        assert p.permit_id
        assert p.remaining == {"requests": 9, "tokens": 3800}
        assert p.lease_expires_at is not None
        assert client.get_quota(res).in_flight == 1
    assert p.done
    q = client.get_quota(res)
    assert q.in_flight == 0
    assert q.remaining["tokens"] == 3800  # a clean exit keeps the cost: the call was made
    assert q.granted_total == 1


def test_permit_denied_raises_with_retry_after_and_reason(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 1, 60)])
    with client.permit(res):
        pass
    with pytest.raises(permitd.PermitDenied) as ei:
        with client.permit(res):
            pytest.fail("the block must not run on a denial")
    e = ei.value
    assert e.reason == "RATE_LIMITED"
    assert 50 < e.retry_after <= 60
    assert e.resource == res


def test_permit_concurrency_denial(client: permitd.Client, make_resource) -> None:
    res = make_resource(concurrency=1)
    with client.permit(res):
        with pytest.raises(permitd.PermitDenied) as ei:
            client.acquire(res)
        assert ei.value.reason == "CONCURRENCY_LIMITED"
    client.acquire(res).release()  # the slot came back on exit


def test_permit_waits_in_the_queue(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 1, 0.4)])
    client.acquire(res).release()
    t0 = time.monotonic()
    with client.permit(res, max_wait=5) as p:
        pass
    assert p.waited > 0.2
    assert time.monotonic() - t0 > 0.2
    with pytest.raises(permitd.PermitDenied) as ei:
        client.acquire(res, max_wait=0.05)
    assert ei.value.reason == "QUEUE_TIMEOUT"


def test_exception_releases_with_refund(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 2, 60), Limit("tokens", 1000, 60)], concurrency=1)
    with pytest.raises(KeyError):
        with client.permit(res, cost={"tokens": 600}) as p:
            raise KeyError("the call was never made")
    assert p.done and p.outcome is None
    q = client.get_quota(res)
    assert q.in_flight == 0
    assert q.remaining == {"requests": 2, "tokens": 1000}  # refunded


def test_report_requests_response(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource(limits=[Limit("requests", 50, 60)])
    url = upstream.script(upstream.path(), (200, RL_HEADERS, {"ok": 1}))
    with client.permit(res) as p:
        out = p.report(requests.get(url, timeout=10))
    assert out.status == 200 and not out.retry
    assert any(l.dimension == "requests" and l.limit == 7 for l in out.learned)
    q = client.get_quota(res)
    assert q.in_flight == 0
    assert q.remaining["requests"] <= 3  # the upstream's remaining corrected permitd's count


def test_report_httpx_response(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource(limits=[Limit("requests", 50, 60)])
    url = upstream.script(upstream.path(), (200, RL_HEADERS, {"ok": 1}))
    with httpx.Client() as http, client.permit(res) as p:
        out = p.report(http.get(url))
    assert any(l.limit == 7 for l in out.learned)


def test_report_429_sets_a_cooldown_for_everyone(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource()
    url = upstream.script(upstream.path(), (429, {"Retry-After": "3"}, {"error": "slow down"}))
    with client.permit(res) as p:
        out = p.report(requests.get(url, timeout=10))
    assert out.retry and 2.5 <= out.retry_after <= 3.5
    assert out.cooldown_until is not None
    with pytest.raises(permitd.PermitDenied) as ei:
        client.acquire(res)
    assert ei.value.reason == "COOLDOWN"
    assert client.get_quota(res).upstream_429_total == 1


def test_http_error_raised_in_block_is_reported(client: permitd.Client, make_resource, upstream) -> None:
    res = make_resource()
    url = upstream.script(upstream.path(), (429, {"Retry-After": "2"}, {"error": "slow down"}))
    with pytest.raises(requests.HTTPError):
        with client.permit(res) as p:
            requests.get(url, timeout=10).raise_for_status()
    assert p.done
    q = client.get_quota(res)
    assert q.upstream_429_total == 1 and q.cooldown_until is not None and q.in_flight == 0


def test_report_explicit_status_headers_actual_cost(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 10, 60), Limit("tokens", 10_000, 60)])
    with client.permit(res, cost={"tokens": 4000}) as p:
        out = p.report(status=200, headers=[("x-ratelimit-limit-tokens", "9000")], actual_cost={"tokens": 1500})
    assert not out.retry
    q = client.get_quota(res)
    assert q.remaining["tokens"] == 8500  # 4000 acquired, 1500 used: 2500 refunded
    with pytest.raises(RuntimeError):
        p.report(status=200)


def test_partition(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 1, 60)], per_partition=True)
    client.acquire(res, partition="user:1").release()
    client.acquire(res, partition="user:2").release()
    with pytest.raises(permitd.PermitDenied):
        client.acquire(res, partition="user:1")


def test_target_from_environment(target: str, make_resource, monkeypatch: pytest.MonkeyPatch) -> None:
    res = make_resource()
    monkeypatch.setenv("PERMITD_TARGET", target)
    with permitd.Client() as c:
        assert c.target == target
        c.acquire(res).release()


def test_unavailable(dead_target: str) -> None:
    with permitd.Client(dead_target, timeout=5) as c:
        with pytest.raises(permitd.PermitdUnavailable):
            c.acquire("any:thing")


def test_unknown_resource_is_not_found(client: permitd.Client) -> None:
    with pytest.raises(permitd.NotFound):
        client.acquire("py:no-such-resource")


def test_server_side_invalid_argument(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 1, 60)])
    # A cost above the burst can never be granted: the server refuses it, naming the field.
    with pytest.raises(permitd.InvalidArgument) as ei:
        client.acquire(res, cost={"requests": 5})
    assert isinstance(ei.value, ValueError)
    assert "cost" in str(ei.value)


def test_put_resource_keeps_a_failure_policy(client: permitd.Client) -> None:
    from permitd.v1 import resource_pb2

    stored = client.put_resource(
        "py:failure-policy", limits=[Limit("requests", 5, 1)], failure_policy="local_fallback"
    )
    assert stored.failure_policy == resource_pb2.FAILURE_POLICY_LOCAL_FALLBACK
    client.delete_resource("py:failure-policy")


def test_year_long_retry_after_is_capped_shown_and_reset(client: permitd.Client, make_resource) -> None:
    name = make_resource()
    p = client.acquire(name)
    p.report(status=429, headers={"Retry-After": "31000000"})
    q = client.get_quota(name)
    assert q.cooldown_until is not None
    assert "cut to max_retry_after" in q.cooldown_reason, q.cooldown_reason
    with pytest.raises(permitd.PermitDenied) as e:
        client.acquire(name)
    assert e.value.reason == "COOLDOWN" and e.value.retry_after <= 15 * 60
    assert client.reset_resource(name) == 1
    q = client.get_quota(name)
    assert q.cooldown_until is None and q.cooldown_reason == ""
    client.acquire(name).release()
