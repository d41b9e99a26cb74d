"""Bad arguments raise ValueError/TypeError before any call. The clients here point at an
address where nothing listens: had a call been made, it would raise PermitdUnavailable."""

from __future__ import annotations

import datetime
import math
from typing import Any, Callable, Dict

import pytest

import permitd
from permitd import Backoff, Limit

from .conftest import run

OK = "openai:gpt-4o"

# (name, call on a client, expected exception)
CASES: Dict[str, Any] = {
    "resource empty": (lambda c: c.permit(""), ValueError),
    "resource not str": (lambda c: c.permit(42), TypeError),
    "resource bad chars": (lambda c: c.permit("open ai!"), ValueError),
    "resource too long": (lambda c: c.permit("a" * 201), ValueError),
    "partition bad": (lambda c: c.permit(OK, partition="user 42"), ValueError),
    "cost not mapping": (lambda c: c.permit(OK, cost=[("tokens", 1)]), TypeError),
    "cost negative": (lambda c: c.permit(OK, cost={"tokens": -1}), ValueError),
    "cost float": (lambda c: c.permit(OK, cost={"tokens": 1.5}), TypeError),
    "cost bool": (lambda c: c.permit(OK, cost={"tokens": True}), TypeError),
    "cost key not str": (lambda c: c.permit(OK, cost={1: 2}), TypeError),
    "cost dimension bad": (lambda c: c.permit(OK, cost={"": 2}), ValueError),
    "max_wait negative": (lambda c: c.permit(OK, max_wait=-1), ValueError),
    "max_wait str": (lambda c: c.permit(OK, max_wait="5"), TypeError),
    "max_wait nan": (lambda c: c.permit(OK, max_wait=math.nan), ValueError),
    "max_wait negative timedelta": (lambda c: c.permit(OK, max_wait=datetime.timedelta(seconds=-1)), ValueError),
    "priority str": (lambda c: c.permit(OK, priority="high"), TypeError),
    "priority out of range": (lambda c: c.permit(OK, priority=1 << 40), ValueError),
    "lease zero": (lambda c: c.permit(OK, lease=0), ValueError),
    "call fn not callable": (lambda c: c.call(OK, "not a function"), TypeError),
    "call max_attempts zero": (lambda c: c.call(OK, print, max_attempts=0), ValueError),
    "call retry_on not types": (lambda c: c.call(OK, print, retry_on=(1,)), TypeError),
    "idempotent key empty": (lambda c: c.idempotent(""), ValueError),
    "idempotent key too long": (lambda c: c.idempotent("k" * 256), ValueError),
    "idempotent key control char": (lambda c: c.idempotent("a\nb"), ValueError),
    "idempotent fingerprint unhashable": (lambda c: c.idempotent("k", fingerprint=object()), TypeError),
    "idempotent ttl zero": (lambda c: c.idempotent("k", ttl=0), ValueError),
    "cached namespace empty": (lambda c: c.cached(""), ValueError),
    "cached ttl negative": (lambda c: c.cached("ns", ttl=-5), ValueError),
    "cached not callable": (lambda c: c.cached("ns")(42), TypeError),
    "watch prefix not str": (lambda c: c.watch(5), TypeError),
    "watch min_interval negative": (lambda c: c.watch("", min_interval=-1), ValueError),
    "get_quota bad resource": (lambda c: c.get_quota("a b"), ValueError),
    "put_resource limit not Limit": (lambda c: c.put_resource(OK, limits=[("requests", 1, 60)]), TypeError),
    "put_resource period zero": (lambda c: c.put_resource(OK, limits=[Limit("requests", 1, 0)]), ValueError),
    "put_resource amount zero": (lambda c: c.put_resource(OK, limits=[Limit("requests", 0, 1)]), ValueError),
    "put_resource backoff kind": (lambda c: c.put_resource(OK, backoff=Backoff(kind="linear")), ValueError),
    "put_resource failure policy": (lambda c: c.put_resource(OK, failure_policy="maybe"), ValueError),
    "compute_backoff attempt zero": (lambda c: c.compute_backoff(OK, attempt=0, status=429), ValueError),
    "compute_backoff status": (lambda c: c.compute_backoff(OK, attempt=1, status=1000), ValueError),
    # Summaries, partition pages and Watch filters.
    "watch partition_prefix not str": (lambda c: c.watch("", partition_prefix=5), TypeError),
    "watch partition_prefix bad": (lambda c: c.watch("", partition_prefix="user 1"), ValueError),
    "watch resource_buckets_only not bool": (lambda c: c.watch("", resource_buckets_only=1), TypeError),
    "watch both filters": (lambda c: c.watch("", partition_prefix="user:", resource_buckets_only=True), ValueError),
    "get_summary resource empty": (lambda c: c.get_summary(""), ValueError),
    "get_summary resource not str": (lambda c: c.get_summary(42), TypeError),
    "get_summary prefix bad": (lambda c: c.get_summary(OK, prefix="a\nb"), ValueError),
    "get_summary prefix not str": (lambda c: c.get_summary(OK, prefix=None), TypeError),
    "get_summary top zero": (lambda c: c.get_summary(OK, top=0), ValueError),
    "get_summary top too big": (lambda c: c.get_summary(OK, top=101), ValueError),
    "get_summary top float": (lambda c: c.get_summary(OK, top=2.5), TypeError),
    "get_summary top bool": (lambda c: c.get_summary(OK, top=True), TypeError),
    "partitions resource bad": (lambda c: c.partitions("a b"), ValueError),
    "partitions prefix too long": (lambda c: c.partitions(OK, prefix="p" * 201), ValueError),
    "partitions order unknown": (lambda c: c.partitions(OK, order="size"), ValueError),
    "partitions order upper case": (lambda c: c.partitions(OK, order="NAME"), ValueError),
    "partitions order not str": (lambda c: c.partitions(OK, order=2), TypeError),
    "partitions order None": (lambda c: c.partitions(OK, order=None), TypeError),
    "partitions page_size zero": (lambda c: c.partitions(OK, page_size=0), ValueError),
    "partitions page_size too big": (lambda c: c.partitions(OK, page_size=1001), ValueError),
    "partitions page_size str": (lambda c: c.partitions(OK, page_size="7"), TypeError),
    "watch_summaries prefix not str": (lambda c: c.watch_summaries(5), TypeError),
    "watch_summaries prefix bad": (lambda c: c.watch_summaries("open ai"), ValueError),
    "watch_summaries partition_prefix bad": (lambda c: c.watch_summaries("", partition_prefix="a b"), ValueError),
    "watch_summaries top zero": (lambda c: c.watch_summaries("", top=0), ValueError),
    "watch_summaries top too big": (lambda c: c.watch_summaries("", top=1000), ValueError),
    "watch_summaries min_interval negative": (lambda c: c.watch_summaries("", min_interval=-1), ValueError),
    "watch_summaries min_interval nan": (lambda c: c.watch_summaries("", min_interval=math.nan), ValueError),
    "watch_summaries min_interval str": (lambda c: c.watch_summaries("", min_interval="1s"), TypeError),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sync_bad_argument(case: str, dead_target: str) -> None:
    fn, exc = CASES[case]
    with permitd.Client(dead_target, timeout=2) as c:
        with pytest.raises(exc) as ei:
            fn(c)
    assert not isinstance(ei.value, permitd.PermitdError)


@pytest.mark.parametrize("case", list(CASES))
def test_async_bad_argument(case: str, dead_target: str) -> None:
    fn, exc = CASES[case]

    async def main() -> None:
        async with permitd.AsyncClient(dead_target, timeout=2) as c:
            with pytest.raises(exc) as ei:
                got = fn(c)
                if hasattr(got, "__await__"):
                    await got
            assert not isinstance(ei.value, permitd.PermitdError)

    run(main())


@pytest.mark.parametrize(
    "make",
    [
        lambda: permitd.Client(target=""),
        lambda: permitd.Client(target=5),
        lambda: permitd.Client(timeout=0),
        lambda: permitd.AsyncClient(timeout=-1),
        lambda: permitd.AsyncClient(client_id="x" * 201),
    ],
)
def test_bad_client_arguments(make: Callable[[], Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        make()


REPORT_CASES: Dict[str, Any] = {
    "nothing": ({}, TypeError),
    "status str": ({"status": "200"}, TypeError),
    "status negative": ({"status": -1}, ValueError),
    "status too big": ({"status": 1000}, ValueError),
    "response not a response": ({"response": object()}, TypeError),
    "headers str": ({"status": 200, "headers": "Retry-After: 1"}, TypeError),
    "headers value": ({"status": 200, "headers": {"Retry-After": None}}, TypeError),
    "actual_cost negative": ({"status": 200, "actual_cost": {"tokens": -3}}, ValueError),
    "attempt zero": ({"status": 200, "attempt": 0}, ValueError),
}


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_report_bad_arguments_leave_the_permit_usable(case: str, client: permitd.Client, make_resource) -> None:
    kwargs, exc = REPORT_CASES[case]
    res = make_resource()
    with client.permit(res) as p:
        with pytest.raises(exc):
            p.report(**kwargs)
        assert not p.done
        p.report(status=200)
    assert client.get_quota(res).in_flight == 0


def test_async_report_bad_arguments(target: str, make_resource) -> None:
    res = make_resource()

    async def main() -> None:
        async with permitd.AsyncClient(target) as c:
            async with c.permit(res) as p:
                for kwargs, exc in REPORT_CASES.values():
                    with pytest.raises(exc):
                        await p.report(**kwargs)
                assert not p.done
                await p.report(status=200)

    run(main())
