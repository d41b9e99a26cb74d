"""Celery tasks under one global limit, for every worker on every host::

    from permitd.celery import PermitTask

    @app.task(base=PermitTask, bind=True, permit={"resource": "slack:chat.postMessage"})
    def post(self, channel, text):
        r = requests.post(SLACK_URL, json={"channel": channel, "text": text})
        self.request.permit.report(r)  # permitd learns the limits; a 429 pauses every worker

Before the task's body runs it takes a permit. A permit not granted within ``max_wait``
(default 0: answer at once, never hold the worker) retries the task with
``countdown`` = permitd's ``retry_after`` plus a jitter that grows with the task's retries,
so a crowd of denied tasks comes back spread out, not together; Celery's own
``max_retries`` does not apply to these retries (``permit_max_retries`` does, default
unbounded), and ``self.request.retries`` counts them.

``permit`` is a resource name, a dict (``resource``, ``cost``, ``partition``,
``max_wait``, ``priority``), or a function of the task's arguments returning one (or None
to run without a permit). Inside the body ``self.request.permit`` is the granted permit:
report the upstream's answer with ``self.request.permit.report(response)``; a body that
ends without reporting releases it, refunding when it raised.

Each worker process makes its own :class:`permitd.Client` on first use (gRPC channels don't
survive a fork): ``permitd_client`` on the task (a function of no arguments), else one
from ``$PERMITD_TARGET`` and ``$PERMITD_TOKEN``.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import celery

from . import errors
from .client import Client

__all__ = ["PermitTask"]

_clients: Dict[Tuple[int, int], Client] = {}
_clients_lock = threading.Lock()
_KEYS = frozenset({"resource", "cost", "partition", "max_wait", "priority"})


def _options(spec: Any, args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    if callable(spec):
        spec = spec(*args, **kwargs)
    if spec is None:
        return None
    if isinstance(spec, str):
        return {"resource": spec}
    if not isinstance(spec, Mapping):
        raise TypeError(f"permit must be a resource name, a dict or a function, not {type(spec).__name__}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise TypeError(f"permit has unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    if "resource" not in spec:
        raise TypeError("permit needs a resource")
    return dict(spec)


class PermitTask(celery.Task):  # type: ignore[misc]
    """A Celery task base that takes a permit before the body: see the module's docs."""

    #: What to acquire: a resource name, a dict, or a function of the task's arguments.
    permit: Any = None
    #: How many permit denials to retry before failing the task (None: unbounded).
    permit_max_retries: Optional[int] = None
    #: The jitter's cap, in seconds, on top of permitd's retry_after.
    permit_jitter: float = 5.0
    #: A function of no arguments returning the process's permitd.Client.
    permitd_client: Optional[Callable[[], Client]] = None

    def _permitd(self) -> Client:
        # One client per process (and per factory): a forked child makes its own.
        factory = type(self).permitd_client  # from the class: a plain function, not a method
        key = (os.getpid(), id(factory))
        c = _clients.get(key)
        if c is None:
            with _clients_lock:
                c = _clients.get(key)
                if c is None:
                    c = factory() if factory is not None else Client()
                    _clients[key] = c
        return c

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        opts = _options(type(self).permit, args, kwargs)
        if opts is None:
            return super().__call__(*args, **kwargs)
        try:
            p = self._permitd().acquire(
                opts["resource"],
                cost=opts.get("cost"),
                partition=opts.get("partition", ""),
                max_wait=opts.get("max_wait"),
                priority=opts.get("priority", 0),
            )
        except errors.PermitDenied as e:
            retries = int(self.request.retries or 0)
            if self.permit_max_retries is not None and retries >= self.permit_max_retries:
                raise
            spread = min(self.permit_jitter, 0.1 * 2 ** min(retries, 16))
            # retry()'s max_retries=None means the task's own default (3): pass a bound.
            raise self.retry(
                exc=e,
                countdown=e.retry_after + random.uniform(0, spread),
                max_retries=self.permit_max_retries if self.permit_max_retries is not None else sys.maxsize,
            )
        # The request is per task run (and per thread), unlike the task object.
        self.request.permit = p
        try:
            result = super().__call__(*args, **kwargs)
        except BaseException as exc:
            p._finish(exc)
            raise
        p._finish(None)
        return result
