"""Resources with many partitions, at a glance: get_summary, partitions (paged),
watch_summaries, and watch's partition filters; sync and async, against the real server."""

from __future__ import annotations

import asyncio
import datetime
import math
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import permitd
from permitd import Limit

from .conftest import run

HOUR = 3600
#: The partition left emptiest by `busy` (9 of its 10 requests an hour taken).
EMPTIEST = "user:17"


def busy(client: permitd.Client, make_resource: Any) -> Tuple[str, Dict[str, int], List[permitd.Permit]]:
    """A per-partition resource of 10 requests an hour per partition (so nothing refills or
    goes idle during a test): 40 ``user:NN`` partitions with 1-4 grants each (``user:17``
    9), and 3 ``team:N`` partitions with 1 grant each, ``team:0`` holding 2 more permits
    in flight. Returns the resource, the grants per partition and the held permits."""
    res = make_resource(per_partition=True, limits=[Limit("requests", 10, HOUR)])
    grants: Dict[str, int] = {}
    for i in range(40):
        grants[f"user:{i:02d}"] = 9 if f"user:{i:02d}" == EMPTIEST else 1 + i % 4
    for i in range(3):
        grants[f"team:{i}"] = 1
    for p, n in grants.items():
        for _ in range(n):
            client.acquire(res, partition=p).report(status=200)
    held = [client.acquire(res, partition="team:0", lease=600) for _ in range(2)]
    grants["team:0"] += 2
    return res, grants, held


def settled_summary(client: permitd.Client, res: str, granted: int, **kwargs: Any) -> permitd.ResourceSummary:
    """A summary that counts ``granted`` grants: one is cut from a reading at most 250 ms
    old, so wait (bounded) for a reading after the last grant."""
    deadline = time.monotonic() + 10
    while True:
        s = client.get_summary(res, **kwargs)
        if s.granted_total == granted or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


class Collector:
    """Reads a sync stream (Watch or SummaryWatch) on a thread, so a test can wait for an
    item, then for a quiet spell, and close the stream: every wait is bounded."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.items: List[Any] = []
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for item in self.stream:
                with self._lock:
                    self.items.append(item)
        except BaseException as e:  # surfaced by wait_for
            self.error = e

    def wait_for(self, pred: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            with self._lock:
                hit = next((i for i in self.items if pred(i)), None)
            if hit is not None:
                return hit
            time.sleep(0.02)
        self.stream.close()
        raise AssertionError(f"no matching item within {timeout} s; got {self.items!r}")

    def close(self, settle: float = 0.0) -> List[Any]:
        """Wait ``settle`` seconds for stragglers, close the stream, return all items."""
        time.sleep(settle)
        self.stream.close()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the stream did not end after close()"
        if self.error is not None:
            raise self.error
        return list(self.items)


# ---------------------------------------------------------------- get_summary


def test_summary_totals_are_the_sum_over_partitions(client: permitd.Client, make_resource) -> None:
    res, grants, held = busy(client, make_resource)
    s = settled_summary(client, res, sum(grants.values()), top=5)
    parts = list(client.partitions(res, page_size=7))

    assert isinstance(s, permitd.ResourceSummary)
    assert s.resource == res and s.per_partition
    assert s.resource_bucket is None, "no resource-wide limits, no resource-wide bucket"
    assert s.live_partitions == len(parts) == len(grants) == 43
    assert s.granted_total == sum(u.granted_total for u in parts) == sum(grants.values())
    assert s.in_flight == sum(u.in_flight for u in parts) == 2
    assert s.denied_total == sum(u.denied_total for u in parts) == 0
    assert s.queue_depth == sum(u.queue_depth for u in parts) == 0
    assert s.upstream_429_total == 0 and s.cooling_down == 0 and s.probing == 0
    # Only user:17 has at most 10 % left.
    assert s.near_empty == 1 and math.isclose(s.near_empty_share, 1 / 43)
    # Converted as QuotaUpdate's fields are: aware datetimes, float seconds, tuples.
    assert isinstance(s.at, datetime.datetime) and s.at.tzinfo is not None
    assert isinstance(s.rate_window, float) and s.rate_window >= 0
    assert s.granted_per_second >= 0 and s.denied_per_second >= 0
    assert isinstance(s.version, int) and s.version >= 1

    # The top: the emptiest partition first, then by what is left; each a QuotaUpdate.
    assert isinstance(s.top, tuple) and len(s.top) == 5
    assert all(isinstance(u, permitd.QuotaUpdate) and u.resource == res for u in s.top)
    assert s.top[0].partition == EMPTIEST and s.top[0].remaining == {"requests": 1}
    left = [u.remaining["requests"] for u in s.top]
    assert left == sorted(left)
    # As the first page in pressure order.
    pressed = [u.partition for u in client.partitions(res, order="pressure", page_size=5)]
    assert [u.partition for u in s.top] == pressed[:5]

    for p in held:
        p.release()


def test_summary_with_a_partition_prefix(client: permitd.Client, make_resource) -> None:
    res, grants, held = busy(client, make_resource)
    settled_summary(client, res, sum(grants.values()))
    teams = client.get_summary(res, prefix="team:", top=100)
    assert teams.live_partitions == 3
    assert teams.granted_total == sum(n for p, n in grants.items() if p.startswith("team:")) == 5
    assert teams.in_flight == 2
    # team:0 has the least left of the three.
    assert [u.partition for u in teams.top] == ["team:0", "team:1", "team:2"]
    users = client.get_summary(res, prefix="user:", top=1)
    assert users.live_partitions == 40 and users.in_flight == 0
    assert [u.partition for u in users.top] == [EMPTIEST]
    none = client.get_summary(res, prefix="nobody:")
    assert (none.live_partitions, none.granted_total, none.top, none.near_empty_share) == (0, 0, (), 0.0)
    for p in held:
        p.release()


def test_summary_of_a_resource_without_partitions(client: permitd.Client, make_resource) -> None:
    res = make_resource(limits=[Limit("requests", 10, HOUR)])
    client.acquire(res).report(status=200)
    s = client.get_summary(res)
    assert not s.per_partition and s.live_partitions == 0 and s.top == ()
    assert s.resource_bucket is not None
    assert s.resource_bucket.resource == res and s.resource_bucket.partition == ""
    assert s.resource_bucket.granted_total == 1 and s.resource_bucket.remaining == {"requests": 9}


# ---------------------------------------------------------------- partitions


def test_partitions_page_through_all_in_name_order(client: permitd.Client, make_resource) -> None:
    res, grants, held = busy(client, make_resource)
    # Count the pages: the iterator follows each page's token until there is none.
    tokens: List[str] = []
    stub = client._quotas
    real = stub.ListPartitions

    def spy(req: Any, **kwargs: Any) -> Any:
        tokens.append(req.page_token)
        return real(req, **kwargs)

    stub.ListPartitions = spy
    try:
        it = client.partitions(res, page_size=7)
        assert tokens == [], "nothing is fetched before the first next()"
        got = list(it)
    finally:
        stub.ListPartitions = real
    names = [u.partition for u in got]
    assert names == sorted(grants), "every partition, once, in name order"
    assert len(set(names)) == len(names) == 43
    assert len(tokens) == math.ceil(43 / 7) and tokens[0] == "" and len(set(tokens)) == len(tokens)
    assert all(u.resource == res for u in got)
    by_name = {u.partition: u for u in got}
    assert all(by_name[p].granted_total == n for p, n in grants.items())

    users = [u.partition for u in client.partitions(res, prefix="user:", page_size=7)]
    assert users == sorted(p for p in grants if p.startswith("user:")) and len(users) == 40
    assert [u.partition for u in client.partitions(res, prefix="team:", page_size=2)] == ["team:0", "team:1", "team:2"]
    assert list(client.partitions(res, prefix="nobody:")) == []
    # One page when it holds them all (the default page size is 100).
    assert [u.partition for u in client.partitions(res)] == names
    for p in held:
        p.release()


def test_partitions_in_pressure_order(client: permitd.Client, make_resource) -> None:
    res, grants, held = busy(client, make_resource)
    settled_summary(client, res, sum(grants.values()))
    got = list(client.partitions(res, order="pressure", page_size=7))
    names = [u.partition for u in got]
    assert sorted(names) == sorted(grants) and len(set(names)) == 43
    assert names[0] == EMPTIEST
    left = [u.remaining["requests"] for u in got]
    assert left == sorted(left), "least left first"
    for p in held:
        p.release()


def test_unknown_resource_is_not_found(client: permitd.Client) -> None:
    nope = f"py:nope:{uuid.uuid4().hex[:8]}"
    with pytest.raises(permitd.NotFound):
        client.get_summary(nope)
    it = client.partitions(nope)
    with pytest.raises(permitd.NotFound) as ei:
        next(it)
    assert "Quotas.ListPartitions" in str(ei.value)


# ---------------------------------------------------------------- watch_summaries


def test_watch_summaries_follow_a_new_grant(client: permitd.Client, make_resource) -> None:
    res, grants, held = busy(client, make_resource)
    settled_summary(client, res, sum(grants.values()))
    with client.watch_summaries(res, top=3, min_interval=0.25) as w:
        timer = threading.Timer(30, w.close)  # bounded: never hang the suite
        timer.start()
        first = next(w)
        assert isinstance(first, permitd.ResourceSummary)
        assert first.resource == res and first.live_partitions == 43 and len(first.top) == 3
        assert first.top[0].partition == EMPTIEST
        # A new partition emptied: the next summaries count it, and name it first.
        for _ in range(10):
            client.acquire(res, partition="user:new").report(status=200)
        seen = None
        for s in w:
            assert s.resource == res
            if s.granted_total == first.granted_total + 10:
                seen = s
                break
        assert seen is not None
        assert seen.live_partitions == 44 and seen.near_empty == 2
        assert seen.top[0].partition == "user:new" and seen.top[0].remaining == {"requests": 0}
        assert seen.version > first.version
    timer.cancel()
    assert list(w) == []  # closed
    for p in held:
        p.release()


def test_watch_summaries_of_a_prefix(client: permitd.Client, make_resource) -> None:
    a = make_resource(per_partition=True, limits=[Limit("requests", 10, HOUR)])
    b = make_resource(limits=[Limit("requests", 10, HOUR)])
    common = a.rsplit(":", 1)[0] + ":"
    assert b.startswith(common)
    client.acquire(a, partition="user:1").report(status=200)
    client.acquire(a, partition="team:1").report(status=200)
    c = Collector(client.watch_summaries(common, partition_prefix="user:", min_interval=0.25))
    c.wait_for(lambda s: s.resource == a)
    c.wait_for(lambda s: s.resource == b)
    got = c.close()
    by = {s.resource: s for s in got}
    assert set(by) == {a, b}
    assert by[a].live_partitions == 1 and [u.partition for u in by[a].top] == ["user:1"]
    assert by[b].resource_bucket is not None and not by[b].per_partition


# ---------------------------------------------------------------- watch's partition filters


def _two_resources(client: permitd.Client, make_resource: Any) -> Tuple[str, str, str]:
    """A flat resource and a per-partition one under one prefix, each with grants."""
    flat = make_resource(limits=[Limit("requests", 100, HOUR)])
    pp = make_resource(per_partition=True, limits=[Limit("requests", 10, HOUR)])
    common = flat.rsplit(":", 1)[0] + ":"
    assert pp.startswith(common)
    for p in ("user:a", "user:b", "team:a"):
        client.acquire(pp, partition=p).report(status=200)
    client.acquire(flat).report(status=200)
    return flat, pp, common


def test_watch_partition_prefix_only_yields_matching_partitions(client: permitd.Client, make_resource) -> None:
    flat, pp, common = _two_resources(client, make_resource)
    c = Collector(client.watch(common, min_interval=0.01, partition_prefix="user:"))
    c.wait_for(lambda u: u.partition == "user:b")  # the snapshot has begun
    # Changes outside the prefix, then one inside it, which comes last.
    client.acquire(pp, partition="team:b").report(status=200)
    client.acquire(flat).report(status=200)
    client.acquire(pp, partition="user:c").report(status=200)
    c.wait_for(lambda u: u.partition == "user:c" and u.granted_total == 1)
    got = c.close(settle=0.5)
    assert {(u.resource, u.partition) for u in got} == {(pp, "user:a"), (pp, "user:b"), (pp, "user:c")}


def test_watch_resource_buckets_only_yields_no_partition(client: permitd.Client, make_resource) -> None:
    flat, pp, common = _two_resources(client, make_resource)
    c = Collector(client.watch(common, min_interval=0.01, resource_buckets_only=True))
    c.wait_for(lambda u: u.resource == flat)  # the snapshot has begun
    client.acquire(pp, partition="user:c").report(status=200)
    client.acquire(flat).report(status=200)
    c.wait_for(lambda u: u.resource == flat and u.granted_total == 2)
    got = c.close(settle=0.5)
    assert got and all(u.partition == "" for u in got), [(u.resource, u.partition) for u in got]
    # The per-partition resource has no resource-wide limits, so no resource-wide bucket.
    assert {u.resource for u in got} == {flat}


def test_watch_without_filters_yields_every_bucket(client: permitd.Client, make_resource) -> None:
    flat, pp, common = _two_resources(client, make_resource)
    c = Collector(client.watch(common, min_interval=0.01))
    c.wait_for(lambda u: u.resource == flat)
    c.wait_for(lambda u: u.partition == "team:a")
    got = c.close()
    assert {(pp, "user:a"), (pp, "user:b"), (pp, "team:a"), (flat, "")} <= {(u.resource, u.partition) for u in got}


# ---------------------------------------------------------------- async


def test_async_summary_partitions_and_watch_summaries(client: permitd.Client, target: str, make_resource) -> None:
    res, grants, held = busy(client, make_resource)
    settled_summary(client, res, sum(grants.values()))

    async def main() -> None:
        async with permitd.AsyncClient(target) as c:
            s = await c.get_summary(res, top=3)
            assert isinstance(s, permitd.ResourceSummary)
            assert s.live_partitions == 43 and s.granted_total == sum(grants.values())
            assert [u.partition for u in s.top][0] == EMPTIEST and len(s.top) == 3
            teams = await c.get_summary(res, prefix="team:")
            assert teams.live_partitions == 3 and teams.in_flight == 2

            names = [u.partition async for u in c.partitions(res, page_size=7)]
            assert names == sorted(grants) and len(set(names)) == 43
            users = [u.partition async for u in c.partitions(res, prefix="user:", page_size=7)]
            assert users == sorted(p for p in grants if p.startswith("user:"))
            pressed = [u async for u in c.partitions(res, order="pressure", page_size=7)]
            assert pressed[0].partition == EMPTIEST and len(pressed) == 43
            assert sum(u.granted_total for u in pressed) == s.granted_total

            async with c.watch_summaries(res, top=2, min_interval=0.25) as w:
                first = await w.__anext__()
                assert first.resource == res and first.live_partitions == 43

                async def grant() -> None:
                    await asyncio.sleep(0.05)
                    await (await c.acquire(res, partition="user:new")).report(status=200)

                task = asyncio.ensure_future(grant())
                async for m in w:
                    if m.live_partitions == 44 and m.granted_total == first.granted_total + 1:
                        break
                await task
            # Closed: iteration ends.
            assert [m async for m in w] == []

            # Watch's partition prefix, async: only team: partitions.
            async with c.watch(res, min_interval=0.01, partition_prefix="team:") as tw:
                seen = set()
                async for u in tw:
                    assert u.partition.startswith("team:"), u
                    seen.add(u.partition)
                    if seen == {"team:0", "team:1", "team:2"}:
                        break

    run(main(), timeout=60)
    for p in held:
        p.release()


def test_async_unknown_resource_is_not_found(target: str) -> None:
    nope = f"py:nope:{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with permitd.AsyncClient(target) as c:
            with pytest.raises(permitd.NotFound):
                await c.get_summary(nope)
            with pytest.raises(permitd.NotFound):
                [u async for u in c.partitions(nope)]

    run(main())


# ---------------------------------------------------------------- bad arguments

OK = "openai:gpt-4o"


def test_unreachable_server_is_mapped(dead_target: str) -> None:
    """With good arguments the call is made, and its failure comes as the client's error."""
    with permitd.Client(dead_target, timeout=2) as c:
        with pytest.raises(permitd.PermitdUnavailable):
            c.get_summary(OK)
        with pytest.raises(permitd.PermitdUnavailable):
            next(c.partitions(OK))
        with pytest.raises(permitd.PermitdUnavailable):
            with c.watch_summaries(OK) as w:
                next(w)
