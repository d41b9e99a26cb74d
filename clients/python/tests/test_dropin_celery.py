"""permitd.celery: two Celery worker processes on a real redis-server broker share one
global limit; denied tasks are retried with a countdown, none is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Iterator, List

import pytest
import redis

import permitd
from permitd import Limit

from .conftest import PY_ROOT, free_port
from .test_dropin_langchain import conforms


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port (the one the Rust tests use too)."""
    exe = shutil.which(os.environ.get("REDIS_SERVER", "redis-server"))
    if exe is None:
        pytest.fail("redis-server not found: the Celery tests need it (apt-get install redis-server)")
    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(d)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            r.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_two_workers_hold_one_global_limit(broker: str, target: str, make_resource: Callable[..., str], tmp_path: object) -> None:
    rate, tasks = 20, 200
    res = make_resource(limits=[Limit("requests", rate, 1)])
    env = {**os.environ, "BROKER_URL": broker, "PERMITD_TARGET": target, "PERMIT_RESOURCE": res}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.workers.celery_app", "worker", "--concurrency", "2",
             "--pool", "prefork", "--hostname", f"w{n}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--loglevel", "WARNING"],
            cwd=PY_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    try:
        os.environ.update({"BROKER_URL": broker, "PERMITD_TARGET": target, "PERMIT_RESOURCE": res})
        sys.path.insert(0, str(PY_ROOT))
        from tests.workers.celery_app import app, call_upstream

        results = [call_upstream.delay(i) for i in range(tasks)]
        got = [r.get(timeout=120) for r in results]
        assert sorted(got) == list(range(tasks))  # none lost, each once
        hits = [json.loads(h) for h in redis.Redis.from_url(broker).lrange("hits", 0, -1)]
        app.control.shutdown()  # the workers go down together
    finally:
        for w in workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
    assert sorted(h["i"] for h in hits) == list(range(tasks))  # each body ran once
    times: List[float] = [h["at"] for h in hits]
    took = max(times) - min(times)
    retried = sum(1 for h in hits if h["retries"] > 0)
    pids = {h["pid"] for h in hits}
    print(
        f"celery: {tasks} tasks over {len(pids)} worker processes in {took:.2f}s at {rate}/s; "
        f"{retried} ran after denied permits, {sum(h['retries'] for h in hits)} retries in all"
    )
    assert len(pids) >= 3, pids  # both hosts' worker processes did the work
    assert not conforms(times, rate, rate, jitter=0.1), conforms(times, rate, rate, jitter=0.1)[:5]
    assert took >= (tasks - rate) / rate * 0.9
    assert retried > 0  # denied tasks went back to the queue, not held a worker
    q = permitd.Client(target).get_quota(res)
    assert q.granted_total == tasks


def test_permit_options_and_bounded_retries(target: str, make_resource: Callable[..., str]) -> None:
    """In-process (eager) tasks: the permit spec may be a function of the task's arguments
    (a partition per user), a body that raises refunds, and permit_max_retries bounds the
    retries of denials."""
    from celery import Celery

    from permitd.celery import PermitTask

    res = make_resource(limits=[Limit("requests", 1, 3600)], per_partition=True)
    app = Celery("eager", set_as_current=False)
    app.conf.task_always_eager = True
    factory = lambda: permitd.Client(target)  # noqa: E731 - the task attribute is a factory

    @app.task(base=PermitTask, bind=True, permit=lambda user, fail=False: {"resource": res, "partition": user},
              permitd_client=factory, permit_max_retries=0)
    def work(self: PermitTask, user: str, fail: bool = False) -> str:
        if fail:
            raise RuntimeError("the upstream call failed before it was made")
        self.request.permit.report(status=200)
        return user

    assert work.apply(args=("alice",)).get() == "alice"
    assert work.apply(args=("bob",)).get() == "bob"  # another partition, its own limit
    with pytest.raises(RuntimeError):
        work.apply(args=("carol", True)).get()
    assert work.apply(args=("carol",)).get() == "carol"  # carol's permit was refunded
    with pytest.raises(permitd.PermitDenied):
        work.apply(args=("alice",)).get()  # alice's hour is used; no retry allowed
    with pytest.raises(TypeError):
        from permitd.celery import _options

        _options({"resource": res, "typo": 1}, (), {})
