"""The Celery app of the Celery test, as a user's would be, with one task under a global
permitd limit. Configured from the environment the test sets: ``BROKER_URL`` (its real
redis-server, also the result backend), ``PERMITD_TARGET``, ``PERMIT_RESOURCE``."""

from __future__ import annotations

import json
import os
import time

import redis
from celery import Celery

from permitd.celery import PermitTask

app = Celery("permitd_test", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=4, broker_connection_retry_on_startup=True)
_hits = redis.Redis.from_url(os.environ["BROKER_URL"])


@app.task(base=PermitTask, bind=True, permit={"resource": os.environ["PERMIT_RESOURCE"]})
def call_upstream(self: PermitTask, i: int) -> int:
    """Stands for a call to a rate-limited API: notes when it ran, then reports it."""
    _hits.rpush(
        "hits",
        json.dumps({"i": i, "at": time.time(), "retries": self.request.retries, "pid": os.getpid()}),
    )
    self.request.permit.report(status=200)
    return i
