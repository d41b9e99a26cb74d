"""The synchronous client."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from typing import Any, Callable, Generic, Iterator, Mapping, Optional, Sequence, Tuple, Type, TypeVar

import grpc

from . import _core as core
from . import errors
from ._base import _IdempotentBase, _PermitBase
from ._core import (
    Backoff,
    BackoffAdvice,
    HeadersLike,
    Limit,
    Outcome,
    QuotaUpdate,
    ResourceSummary,
    Seconds,
    StoredResult,
)
from .v1 import (
    cache_pb2,
    cache_pb2_grpc,
    idempotency_pb2_grpc,
    permits_pb2,
    permits_pb2_grpc,
    quotas_pb2,
    quotas_pb2_grpc,
    resource_pb2,
)

log = logging.getLogger("permitd")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_S = TypeVar("_S", bound="_Stream[Any]")

DEFAULT_RETRY_ON: Tuple[Type[BaseException], ...] = (OSError, TimeoutError)


class Permit(_PermitBase):
    """A granted permit. Report the upstream's answer with :meth:`report`, or give it back
    with :meth:`release`; ``with client.permit(...)`` does one of them for you on exit."""

    def __init__(self, client: "Client", args: core.AcquireArgs, r: permits_pb2.AcquirePermitResponse) -> None:
        super().__init__(args, r)
        self._client = client

    def report(
        self,
        response: Any = None,
        *,
        status: Optional[int] = None,
        headers: Optional[HeadersLike] = None,
        actual_cost: Optional[Mapping[str, int]] = None,
        attempt: Optional[int] = None,
        answered_at: Optional[float] = None,
    ) -> Outcome:
        """Report the upstream's answer: ``response`` is a ``requests``, ``httpx`` or
        ``aiohttp`` response (status and headers read from it); ``status=`` (0 = no answer),
        ``headers=`` and ``actual_cost=`` give them explicitly (and override the response's).
        ``answered_at``: the ``time.monotonic()`` when the answer arrived, if you report
        later (after a stream): permitd then reads reset instants as of the answer.
        Releases the concurrency slot, reconciles the cost, and returns permitd's advice."""
        rep = core.report_args(response, status, headers, actual_cost, attempt, answered_at)
        if self.done:
            raise RuntimeError(f"permit {self.permit_id} was already reported or released")
        self.done = True
        self.outcome = self._client._report(self.permit_id, rep)
        return self.outcome

    def release(self, *, refund: bool = False) -> None:
        """Give the permit back without an outcome; ``refund=True`` when the call was never
        made (its cost goes back to the bucket). An already released permit is fine."""
        if not isinstance(refund, bool):
            raise TypeError("refund must be a bool")
        if self.done:
            return
        self.done = True
        self._client._release(self.permit_id, refund)

    def _finish(self, exc: Optional[BaseException]) -> None:
        if self.done:
            return
        try:
            resp = core.response_of_exception(exc) if exc is not None else None
            if resp is not None:
                self.report(resp)
            else:
                self.release(refund=exc is not None)
        except errors.PermitdError as e:
            # The lease reclaims the slot anyway; never mask the block's own outcome.
            log.warning("permitd: could not settle permit %s: %s", self.permit_id, e)


class PermitContext:
    """``with client.permit(...) as p:`` — acquires on entry; on exit releases (refunding on
    an exception, or reporting the HTTP error's response when the exception carries one)
    unless ``p.report(...)`` was called."""

    def __init__(self, client: "Client", args: core.AcquireArgs) -> None:
        self._client = client
        self._args = args
        self.permit: Optional[Permit] = None

    def __enter__(self) -> Permit:
        self.permit = self._client._acquire(self._args)
        return self.permit

    def __exit__(self, et: Any, exc: Optional[BaseException], tb: Any) -> None:
        if self.permit is not None:
            self.permit._finish(exc)


class Idempotent(_IdempotentBase):
    """``with client.idempotent(key, fingerprint=...) as op:`` — claims the key on entry.

    - ``op.replayed`` True: the call was already made; ``op.result`` is its stored result.
      Don't call again.
    - else you own the key: make the call and ``op.complete(response)`` (or ``status=``,
      ``headers=``, ``body=``, ``metadata=``). A block that ends without ``complete`` is
      completed with an empty result (the side effect happened); a block that raises
      abandons the key so a later attempt may run.
    """

    def __init__(self, client: "Client", *args: Any) -> None:
        super().__init__(*args)
        self._client = client

    def __enter__(self) -> "Idempotent":
        deadline = time.monotonic() + self._wait
        while True:
            r = self._client._rpc(self._client._idem.Begin, self._begin_request(), "Idempotency.Begin")
            wait = self._accept(r)
            if wait is None:
                return self
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.IdempotencyInProgress(self.key, wait)
            time.sleep(min(wait, left))

    def complete(
        self,
        response: Any = None,
        *,
        status: Optional[int] = None,
        headers: Optional[HeadersLike] = None,
        body: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> StoredResult:
        """Store the call's result (durably) so later attempts replay it."""
        msg = core.stored_result_message(
            response, status, headers, body, metadata, core.body_of(response) if response is not None else b""
        )
        self._check_not_completed()
        self._client._rpc(self._client._idem.Complete, self._complete_request(msg), "Idempotency.Complete")
        self.completed = True
        self.result = core.stored_of(msg)
        return self.result

    def abandon(self) -> None:
        """Drop the lock so another attempt may begin."""
        self._check_not_completed()
        self._client._rpc(self._client._idem.Abandon, self._abandon_request(), "Idempotency.Abandon")
        self.completed = True

    def __exit__(self, et: Any, exc: Optional[BaseException], tb: Any) -> None:
        if self.completed:
            return
        if exc is None:
            self.complete(status=0)
            return
        try:
            self.abandon()
        except errors.PermitdError as e:
            log.warning("permitd: could not abandon idempotency key %r: %s", self.key, e)


class _Stream(Generic[T]):
    """An iterator over a server stream; ``close()`` (or leaving ``with``) ends it."""

    def __init__(self, call: Any, convert: Callable[[Any], T], what: str) -> None:
        self._call = call
        self._convert = convert
        self._what = what
        self._closed = False

    def __iter__(self: _S) -> _S:
        return self

    def __next__(self) -> T:
        try:
            m = next(self._call)
        except grpc.RpcError as e:
            if self._closed or e.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise core.map_rpc_error(e, self._what) from e
        return self._convert(m)

    def close(self) -> None:
        self._closed = True
        self._call.cancel()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Watch(_Stream[QuotaUpdate]):
    """An iterator over quota updates; ``close()`` (or leaving ``with``) ends the stream."""

    def __init__(self, call: Any) -> None:
        super().__init__(call, core.quota_of, "Quotas.Watch")


class SummaryWatch(_Stream[ResourceSummary]):
    """An iterator over resource summaries; ``close()`` (or leaving ``with``) ends the
    stream."""

    def __init__(self, call: Any) -> None:
        super().__init__(call, core.summary_of, "Quotas.WatchSummaries")


class Client:
    """A synchronous permitd client.

    ``target`` is ``host:port``; without it ``$PERMITD_TARGET``, else ``127.0.0.1:50051``.
    ``timeout`` bounds each RPC (an acquire gets its ``max_wait`` on top).

    Security: ``token`` (else ``$PERMITD_TOKEN``) is sent as ``authorization: Bearer`` on
    every call; ``root_certificates`` (the CA that signed the server's certificate) makes a
    TLS channel, and ``client_cert`` with ``client_key`` present a client certificate (mTLS);
    each is PEM bytes or a file path. ``tenant`` picks the tenant an operator principal acts
    for. ``credentials`` (``grpc.ssl_channel_credentials(...)``) may be given instead of the
    certificate arguments. The channel connects lazily: constructing a client makes no call.
    """

    def __init__(
        self,
        target: Optional[str] = None,
        *,
        timeout: Seconds = 10.0,
        client_id: str = "",
        credentials: Optional[grpc.ChannelCredentials] = None,
        options: Sequence[Tuple[str, Any]] = (),
        token: Optional[str] = None,
        tenant: Optional[str] = None,
        root_certificates: Optional[core.PemLike] = None,
        client_cert: Optional[core.PemLike] = None,
        client_key: Optional[core.PemLike] = None,
    ) -> None:
        self.target = core.check_target(target)
        self.timeout = core.check_seconds(timeout, "timeout", allow_zero=False, optional=False) or 10.0
        if not isinstance(client_id, str) or len(client_id.encode()) > core.MAX_NAME_BYTES:
            raise ValueError("client_id must be a str of at most 200 bytes")
        self.client_id = client_id
        credentials, self._metadata = core.security(
            token=token,
            tenant=tenant,
            root_certificates=root_certificates,
            client_cert=client_cert,
            client_key=client_key,
            credentials=credentials,
        )
        opts = list(options)
        if credentials is not None:
            self._channel = grpc.secure_channel(self.target, credentials, options=opts)
        else:
            self._channel = grpc.insecure_channel(self.target, options=opts)
        self._permits = permits_pb2_grpc.PermitsStub(self._channel)
        self._quotas = quotas_pb2_grpc.QuotasStub(self._channel)
        self._idem = idempotency_pb2_grpc.IdempotencyStub(self._channel)
        self._cache = cache_pb2_grpc.CacheStub(self._channel)

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})"

    def _rpc(self, method: Any, request: Any, what: str, timeout: Optional[float] = None) -> Any:
        try:
            return method(
                request, timeout=timeout if timeout is not None else self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise core.map_rpc_error(e, what) from e

    def _acquire(self, args: core.AcquireArgs) -> Permit:
        r = self._rpc(
            self._permits.AcquirePermit,
            args.request(self.client_id),
            "Permits.AcquirePermit",
            args.rpc_timeout(self.timeout),
        )
        if not r.granted:
            raise errors.PermitDenied(
                args.resource, args.partition, core.denial_reason(r.denial_reason), core.seconds_of(r.retry_after)
            )
        return Permit(self, args, r)

    def _report(self, permit_id: str, rep: core.Report) -> Outcome:
        r = self._rpc(self._permits.ReportOutcome, core.report_request(permit_id, rep), "Permits.ReportOutcome")
        return core.outcome_of(r, rep.status)

    def _release(self, permit_id: str, refund: bool) -> None:
        try:
            self._rpc(
                self._permits.ReleasePermit,
                permits_pb2.ReleasePermitRequest(permit_id=permit_id, refund=refund),
                "Permits.ReleasePermit",
            )
        except errors.NotFound:
            pass  # already released or its lease ended: harmless

    # ------------------------------------------------------------ permits

    def acquire(
        self,
        resource: str,
        *,
        cost: Optional[Mapping[str, int]] = None,
        partition: str = "",
        max_wait: Optional[Seconds] = None,
        priority: int = 0,
        lease: Optional[Seconds] = None,
    ) -> Permit:
        """Ask for a permit, waiting up to ``max_wait`` seconds in permitd's queue (None or 0:
        answer at once). Raises :class:`PermitDenied` when not granted. ``cost`` maps
        dimensions to amounts (``{"tokens": 1200}``; ``requests`` counts 1 unless given)."""
        return self._acquire(core.acquire_args(resource, partition, cost, max_wait, priority, lease))

    def permit(
        self,
        resource: str,
        *,
        cost: Optional[Mapping[str, int]] = None,
        partition: str = "",
        max_wait: Optional[Seconds] = None,
        priority: int = 0,
        lease: Optional[Seconds] = None,
    ) -> PermitContext:
        """``with client.permit("openai:gpt-4o", cost={"tokens": 1200}, max_wait=30) as p:``

        Acquires on entry (see :meth:`acquire`); inside, call ``p.report(response)``. On exit
        an unreported permit is released: refunded if the block raised (or, if the exception
        carries an HTTP response such as ``requests.HTTPError``, that response is reported)."""
        return PermitContext(self, core.acquire_args(resource, partition, cost, max_wait, priority, lease))

    def call(
        self,
        resource: str,
        fn: Callable[..., T],
        *args: Any,
        cost: Optional[Mapping[str, int]] = None,
        partition: str = "",
        max_wait: Optional[Seconds] = 30.0,
        priority: int = 0,
        max_attempts: Optional[int] = None,
        actual_cost: Optional[Callable[[T], Mapping[str, int]]] = None,
        retry_on: Tuple[Type[BaseException], ...] = DEFAULT_RETRY_ON,
        **kwargs: Any,
    ) -> T:
        """Acquire -> ``fn(*args, **kwargs)`` -> report, retrying as permitd advises.

        ``fn`` returns an HTTP response (``requests``/``httpx``/``aiohttp``). After each
        attempt permitd says whether to retry and after how long (the upstream's Retry-After,
        else the resource's backoff policy, never before a cooldown ends); the helper sleeps
        exactly that. It returns the first response permitd does not advise retrying
        (success, or a non-retryable error such as 404), and raises
        :class:`RetriesExhausted` (with ``last_response``) once the policy's attempts, or
        ``max_attempts``, are used up. An exception of a ``retry_on`` type (network errors)
        is reported as "no answer" (status 0) and retried the same way; other exceptions
        refund the permit and propagate. ``actual_cost(response)`` reconciles the cost.
        ``fn``'s own keyword arguments must not clash with these names (use
        ``functools.partial``)."""
        core.check_callable(fn)
        acq = core.acquire_args(resource, partition, cost, max_wait, priority, None)
        if max_attempts is not None:
            core.check_int(max_attempts, "max_attempts", 1, 1 << 31)
        if actual_cost is not None:
            core.check_callable(actual_cost, "actual_cost")
        _check_retry_on(retry_on)
        attempt = 0
        while True:
            attempt += 1
            p = self._acquire(acq)
            resp: Any = None
            exc: Optional[BaseException] = None
            try:
                resp = fn(*args, **kwargs)
            except retry_on as e:
                exc = e
                resp = core.response_of_exception(e)
            except BaseException as e:
                r = core.response_of_exception(e)
                if r is not None:
                    p.report(r, attempt=attempt)
                else:
                    p.release(refund=True)
                raise
            cost_used = actual_cost(resp) if (actual_cost is not None and resp is not None) else None
            outcome = p.report(resp, status=None if resp is not None else 0, actual_cost=cost_used, attempt=attempt)
            give_up = max_attempts is not None and attempt >= max_attempts
            if outcome.retry and not give_up:
                time.sleep(outcome.retry_after)
                continue
            if outcome.retry or (
                core.is_failure(outcome.status)
                and self.compute_backoff(
                    acq.resource, attempt=attempt, status=outcome.status, headers=core.response_headers(resp) if resp is not None else None
                ).give_up
            ):
                raise errors.RetriesExhausted(acq.resource, attempt, outcome.status, resp, exc) from exc
            if exc is not None:
                raise exc
            return resp  # type: ignore[no-any-return]

    def compute_backoff(
        self,
        resource: str,
        *,
        attempt: int,
        status: int,
        headers: Optional[HeadersLike] = None,
        partition: str = "",
    ) -> BackoffAdvice:
        """The resource's retry advice for a failed ``attempt`` (1 = the first try)."""
        req = permits_pb2.ComputeBackoffRequest(
            resource=core.check_name(resource, "resource"),
            attempt=core.check_int(attempt, "attempt", 1, (1 << 32) - 1),
            status_code=core.check_status(status),
            headers=core.check_headers(headers),
            partition=core.check_name(partition, "partition", required=False),
        )
        r = self._rpc(self._permits.ComputeBackoff, req, "Permits.ComputeBackoff")
        return BackoffAdvice(retry=r.retry, retry_after=core.seconds_of(r.retry_after), give_up=r.give_up)

    # ------------------------------------------------------------ idempotency and cache

    def idempotent(
        self,
        key: str,
        *,
        fingerprint: Any = None,
        ttl: Optional[Seconds] = None,
        lock_ttl: Optional[Seconds] = None,
        wait: Seconds = 30.0,
    ) -> Idempotent:
        """``with client.idempotent("charge-42", fingerprint=payload) as op:`` — see
        :class:`Idempotent`. ``fingerprint`` is a str, or any JSON-like value (hashed), that
        identifies the request, so a key reused for another request raises
        :class:`IdempotencyConflict`. ``ttl``: how long the record is kept (server default
        24 h); ``lock_ttl``: how long you may hold the key (default 60 s); ``wait``: how long
        to wait for another worker holding the key before :class:`IdempotencyInProgress`."""
        return Idempotent(
            self,
            core.check_key(key, "key"),
            core.fingerprint_of(fingerprint),
            core.check_seconds(ttl, "ttl", allow_zero=False),
            core.check_seconds(lock_ttl, "lock_ttl", allow_zero=False),
            core.check_seconds(wait, "wait", optional=False) or 0.0,
        )

    def cache_get(self, namespace: str, key: str) -> Optional[bytes]:
        """The live value under ``key``, or None."""
        req = cache_pb2.CacheGetRequest(
            namespace=core.check_key(namespace, "namespace", core.MAX_NAME_BYTES), key=core.check_key(key, "key")
        )
        r = self._rpc(self._cache.Get, req, "Cache.Get")
        return bytes(r.value) if r.found else None

    def cache_put(self, namespace: str, key: str, value: bytes, ttl: Optional[Seconds] = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: the server's default)."""
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        req = cache_pb2.CachePutRequest(
            namespace=core.check_key(namespace, "namespace", core.MAX_NAME_BYTES),
            key=core.check_key(key, "key"),
            value=bytes(value),
        )
        t = core.check_seconds(ttl, "ttl", allow_zero=False)
        if t is not None:
            req.ttl.CopyFrom(core.duration(t))
        self._rpc(self._cache.Put, req, "Cache.Put")

    def cache_delete(self, namespace: str, key: str) -> bool:
        """Remove an entry; whether one was removed."""
        req = cache_pb2.CacheDeleteRequest(
            namespace=core.check_key(namespace, "namespace", core.MAX_NAME_BYTES), key=core.check_key(key, "key")
        )
        return bool(self._rpc(self._cache.Delete, req, "Cache.Delete").deleted)

    def cached(
        self,
        namespace: str,
        ttl: Optional[Seconds] = None,
        *,
        name: Optional[str] = None,
        encode: Callable[[Any], bytes] = core.json_encode,
        decode: Callable[[bytes], Any] = core.json_decode,
    ) -> Callable[[F], F]:
        """Decorator: cache the function's results in permitd under ``namespace`` for
        ``ttl`` seconds. The key is a SHA-256 of the function's name (``name=`` overrides)
        and its arguments bound to its signature, in a canonical JSON form, so it is the same
        in every process; arguments with no stable form raise TypeError before any call.
        Values are stored as JSON unless ``encode``/``decode`` say otherwise. The wrapper has
        ``.cache_key(*args, **kwargs)`` and ``.invalidate(*args, **kwargs)``."""
        ns = core.check_key(namespace, "namespace", core.MAX_NAME_BYTES)
        t = core.check_seconds(ttl, "ttl", allow_zero=False)
        core.check_callable(encode, "encode")
        core.check_callable(decode, "decode")
        if name is not None and not isinstance(name, str):
            raise TypeError("name must be a str")

        def decorate(fn: F) -> F:
            core.check_callable(fn)
            if inspect.iscoroutinefunction(fn):
                raise TypeError("Client.cached wraps plain functions; use AsyncClient.cached for async def")
            sig, fname = _signature(fn, name)

            def key_of(*args: Any, **kwargs: Any) -> str:
                return core.call_key(fname, sig, args, kwargs)

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                key = key_of(*args, **kwargs)
                hit = self.cache_get(ns, key)
                if hit is not None:
                    return decode(hit)
                value = fn(*args, **kwargs)
                self.cache_put(ns, key, encode(value), t)
                return value

            def invalidate(*args: Any, **kwargs: Any) -> bool:
                return self.cache_delete(ns, key_of(*args, **kwargs))

            wrapper.cache_key = key_of  # type: ignore[attr-defined]
            wrapper.invalidate = invalidate  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate

    # ------------------------------------------------------------ quotas

    def watch(
        self,
        prefix: str = "",
        *,
        min_interval: Optional[Seconds] = None,
        partition_prefix: str = "",
        resource_buckets_only: bool = False,
    ) -> Watch:
        """Iterate over quota updates of resources whose name starts with ``prefix``: first
        one per matching bucket (the snapshot), then each change, at most one per bucket per
        ``min_interval`` seconds. Use as ``with client.watch("openai:") as w: for u in w:``.

        ``partition_prefix``: only partitions whose name starts with it (a non-empty one
        leaves out the resource-wide buckets); ``resource_buckets_only=True``: only the
        resource-wide buckets, no partition's updates (:meth:`watch_summaries` shows
        those). The two exclude each other."""
        req = core.watch_request(prefix, min_interval, partition_prefix, resource_buckets_only)
        return Watch(self._quotas.Watch(req, metadata=self._metadata))

    def get_summary(self, resource: str, *, prefix: str = "", top: int = 10) -> ResourceSummary:
        """One resource at a glance: its resource-wide bucket, totals over its live
        partitions whose name starts with ``prefix`` and the ``top`` (1-100) of them under
        most pressure, most pressed first. Cut from one reading of the partitions, at most
        250 ms old. :class:`NotFound` for an unknown resource; a cluster replica, which
        holds no partition buckets, answers :class:`PermitdError` with code UNIMPLEMENTED."""
        req = core.summary_request(resource, prefix, top)
        return core.summary_of(self._rpc(self._quotas.GetSummary, req, "Quotas.GetSummary"))

    def partitions(
        self, resource: str, *, prefix: str = "", order: str = "name", page_size: int = 100
    ) -> Iterator[QuotaUpdate]:
        """Iterate over a resource's live partitions whose name starts with ``prefix``, each
        read as its page is fetched: ``order="name"`` (by name) or ``"pressure"`` (most
        pressed first, as :attr:`ResourceSummary.top`). Pages of ``page_size`` (1-1000) are
        fetched as the iteration needs them, following the page tokens to the end. The
        first call is made on the first ``next()``; :class:`NotFound` for an unknown
        resource."""
        req = core.partitions_request(resource, prefix, order, page_size)
        return self._partition_pages(req)

    def _partition_pages(self, req: quotas_pb2.ListPartitionsRequest) -> Iterator[QuotaUpdate]:
        while True:
            r = self._rpc(self._quotas.ListPartitions, req, "Quotas.ListPartitions")
            for u in r.partitions:
                yield core.quota_of(u)
            if not r.next_page_token:
                return
            req.page_token = r.next_page_token

    def watch_summaries(
        self,
        prefix: str = "",
        *,
        top: int = 10,
        min_interval: Optional[Seconds] = None,
        partition_prefix: str = "",
    ) -> SummaryWatch:
        """Iterate over summaries of the resources whose name starts with ``prefix``: one of
        each first, then each one again when its figures changed, at most once per
        ``min_interval`` seconds (server default 1 s, at least 0.25 s). ``top`` (1-100)
        partitions under most pressure are named per summary; ``partition_prefix`` limits
        the totals and ``top`` to partitions whose name starts with it. Its cost to the
        server does not grow with the partitions. Use as
        ``with client.watch_summaries("openai:") as w: for s in w:``."""
        req = core.watch_summaries_request(prefix, partition_prefix, top, min_interval)
        return SummaryWatch(self._quotas.WatchSummaries(req, metadata=self._metadata))

    def get_quota(self, resource: str, *, partition: str = "") -> QuotaUpdate:
        """The current state of one bucket."""
        req = quotas_pb2.GetQuotaRequest(
            resource=core.check_name(resource, "resource"),
            partition=core.check_name(partition, "partition", required=False),
        )
        return core.quota_of(self._rpc(self._quotas.GetQuota, req, "Quotas.GetQuota"))

    def put_resource(
        self,
        name: str,
        *,
        limits: Sequence[Limit] = (),
        concurrency: int = 0,
        lease: Optional[Seconds] = None,
        per_partition: bool = False,
        backoff: Optional[Backoff] = None,
        max_queue: int = 0,
        learn_from_headers: Optional[bool] = None,
        dimensions: Sequence[str] = (),
        failure_policy: Optional[str] = None,
        limits_known: Optional[bool] = None,
        probe_concurrency: Optional[int] = None,
        accept_feedback_without_permit: Optional[bool] = None,
    ) -> resource_pb2.Resource:
        """Define or replace a resource (admin); returns it as stored."""
        res = core.resource_message(
            name,
            limits,
            concurrency,
            lease,
            per_partition,
            backoff,
            max_queue,
            learn_from_headers,
            dimensions,
            failure_policy,
            limits_known,
            probe_concurrency,
            accept_feedback_without_permit,
        )
        r = self._rpc(self._quotas.PutResource, quotas_pb2.PutResourceRequest(resource=res), "Quotas.PutResource")
        stored: resource_pb2.Resource = r.resource
        return stored

    def delete_resource(self, name: str) -> None:
        """Remove a resource (admin)."""
        req = quotas_pb2.DeleteResourceRequest(name=core.check_name(name, "name"))
        self._rpc(self._quotas.DeleteResource, req, "Quotas.DeleteResource")

    def reset_resource(self, name: str) -> int:
        """Clear what feedback imposed on a resource (admin): cooldowns, dimension blocks
        and learned limits; its buckets start afresh. Returns the live buckets reset."""
        req = quotas_pb2.ResetResourceRequest(name=core.check_name(name, "name"))
        r = self._rpc(self._quotas.ResetResource, req, "Quotas.ResetResource")
        return int(r.buckets)


def _check_retry_on(retry_on: Any) -> None:
    if not isinstance(retry_on, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
    ):
        raise TypeError("retry_on must be a tuple of exception types")


def _signature(fn: Callable[..., Any], name: Optional[str]) -> Tuple[Optional[inspect.Signature], str]:
    try:
        sig: Optional[inspect.Signature] = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    fname = name or getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return sig, fname
