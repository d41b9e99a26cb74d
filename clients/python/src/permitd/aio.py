"""The asyncio client: the same shape as :class:`permitd.Client`, over ``grpc.aio``."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Generic,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

import grpc
import grpc.aio

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
from .client import DEFAULT_RETRY_ON, _check_retry_on, _signature
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
AF = TypeVar("AF", bound=Callable[..., Awaitable[Any]])
_S = TypeVar("_S", bound="_AsyncStream[Any]")


async def _body_async(response: Any) -> bytes:
    """The body of a response, reading an aiohttp response if it has not been read."""
    data = core.body_of(response)
    if data:
        return data
    read = getattr(response, "read", None)
    if read is not None and inspect.iscoroutinefunction(read):
        try:
            got = await read()
            if isinstance(got, (bytes, bytearray)):
                return bytes(got)
        except Exception:  # a released connection: the body is gone
            return b""
    return b""


class AsyncPermit(_PermitBase):
    """A granted permit (async): ``await p.report(response)`` or ``await p.release()``."""

    def __init__(self, client: "AsyncClient", args: core.AcquireArgs, r: permits_pb2.AcquirePermitResponse) -> None:
        super().__init__(args, r)
        self._client = client

    async def report(
        self,
        response: Any = None,
        *,
        status: Optional[int] = None,
        headers: Optional[HeadersLike] = None,
        actual_cost: Optional[Mapping[str, int]] = None,
        attempt: Optional[int] = None,
        answered_at: Optional[float] = None,
    ) -> Outcome:
        """See :meth:`permitd.Permit.report`."""
        rep = core.report_args(response, status, headers, actual_cost, attempt, answered_at)
        if self.done:
            raise RuntimeError(f"permit {self.permit_id} was already reported or released")
        self.done = True
        self.outcome = await self._client._report(self.permit_id, rep)
        return self.outcome

    async def release(self, *, refund: bool = False) -> None:
        """See :meth:`permitd.Permit.release`."""
        if not isinstance(refund, bool):
            raise TypeError("refund must be a bool")
        if self.done:
            return
        self.done = True
        await self._client._release(self.permit_id, refund)

    async def _finish(self, exc: Optional[BaseException]) -> None:
        if self.done:
            return
        try:
            resp = core.response_of_exception(exc) if exc is not None else None
            if resp is not None:
                await self.report(resp)
            else:
                await self.release(refund=exc is not None)
        except errors.PermitdError as e:
            log.warning("permitd: could not settle permit %s: %s", self.permit_id, e)


class AsyncPermitContext:
    """``async with client.permit(...) as p:`` — see :meth:`permitd.Client.permit`."""

    def __init__(self, client: "AsyncClient", args: core.AcquireArgs) -> None:
        self._client = client
        self._args = args
        self.permit: Optional[AsyncPermit] = None

    async def __aenter__(self) -> AsyncPermit:
        self.permit = await self._client._acquire(self._args)
        return self.permit

    async def __aexit__(self, et: Any, exc: Optional[BaseException], tb: Any) -> None:
        if self.permit is not None:
            # Settle even when the task is being cancelled.
            await asyncio.shield(self.permit._finish(exc))


class AsyncIdempotent(_IdempotentBase):
    """``async with client.idempotent(key, fingerprint=...) as op:`` — see
    :class:`permitd.Idempotent`."""

    def __init__(self, client: "AsyncClient", *args: Any) -> None:
        super().__init__(*args)
        self._client = client

    async def __aenter__(self) -> "AsyncIdempotent":
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            c = self._client
            r = await c._rpc(c._stubs()[2].Begin, self._begin_request(), "Idempotency.Begin")
            wait = self._accept(r)
            if wait is None:
                return self
            left = deadline - loop.time()
            if left <= 0:
                raise errors.IdempotencyInProgress(self.key, wait)
            await asyncio.sleep(min(wait, left))

    async def complete(
        self,
        response: Any = None,
        *,
        status: Optional[int] = None,
        headers: Optional[HeadersLike] = None,
        body: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> StoredResult:
        """Store the call's result (an aiohttp response is read if it has not been)."""
        default = await _body_async(response) if (response is not None and body is None) else b""
        msg = core.stored_result_message(response, status, headers, body, metadata, default)
        self._check_not_completed()
        c = self._client
        await c._rpc(c._stubs()[2].Complete, self._complete_request(msg), "Idempotency.Complete")
        self.completed = True
        self.result = core.stored_of(msg)
        return self.result

    async def abandon(self) -> None:
        """Drop the lock so another attempt may begin."""
        self._check_not_completed()
        c = self._client
        await c._rpc(c._stubs()[2].Abandon, self._abandon_request(), "Idempotency.Abandon")
        self.completed = True

    async def __aexit__(self, et: Any, exc: Optional[BaseException], tb: Any) -> None:
        if self.completed:
            return
        if exc is None:
            await self.complete(status=0)
            return
        try:
            await self.abandon()
        except errors.PermitdError as e:
            log.warning("permitd: could not abandon idempotency key %r: %s", self.key, e)


class _AsyncStream(Generic[T]):
    """``async for`` over a server stream; ``close()`` (or leaving ``async with``) ends it."""

    def __init__(self, call: Any, convert: Callable[[Any], T], what: str) -> None:
        self._call = call
        self._convert = convert
        self._what = what
        self._closed = False

    def __aiter__(self: _S) -> _S:
        return self

    async def __anext__(self) -> T:
        try:
            m = await self._call.read()
        except asyncio.CancelledError:
            if self._closed:
                raise StopAsyncIteration from None
            raise
        except grpc.RpcError as e:
            if self._closed or e.code() == grpc.StatusCode.CANCELLED:
                raise StopAsyncIteration from None
            raise core.map_rpc_error(e, self._what) from e
        if m is grpc.aio.EOF:
            raise StopAsyncIteration
        return self._convert(m)

    def close(self) -> None:
        self._closed = True
        self._call.cancel()

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class AsyncWatch(_AsyncStream[QuotaUpdate]):
    """``async for update in client.watch(prefix)``; ``close()`` ends the stream."""

    def __init__(self, call: Any) -> None:
        super().__init__(call, core.quota_of, "Quotas.Watch")


class AsyncSummaryWatch(_AsyncStream[ResourceSummary]):
    """``async for summary in client.watch_summaries(prefix)``; ``close()`` ends the
    stream."""

    def __init__(self, call: Any) -> None:
        super().__init__(call, core.summary_of, "Quotas.WatchSummaries")


class AsyncClient:
    """An asyncio permitd client (``grpc.aio``); arguments as :class:`permitd.Client`. The
    channel is opened on first use, inside the running event loop."""

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
        self._credentials = credentials
        self._options = list(options)
        self._channel: Optional[grpc.aio.Channel] = None
        self._stub_set: Optional[Tuple[Any, Any, Any, Any]] = None

    def _stubs(self) -> Tuple[Any, Any, Any, Any]:
        if self._stub_set is None:
            if self._credentials is not None:
                ch = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
            else:
                ch = grpc.aio.insecure_channel(self.target, options=self._options)
            self._channel = ch
            self._stub_set = (
                permits_pb2_grpc.PermitsStub(ch),
                quotas_pb2_grpc.QuotasStub(ch),
                idempotency_pb2_grpc.IdempotencyStub(ch),
                cache_pb2_grpc.CacheStub(ch),
            )
        return self._stub_set

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub_set = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.target!r})"

    async def _rpc(self, method: Any, request: Any, what: str, timeout: Optional[float] = None) -> Any:
        try:
            return await method(
                request, timeout=timeout if timeout is not None else self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise core.map_rpc_error(e, what) from e

    async def _acquire(self, args: core.AcquireArgs) -> AsyncPermit:
        r = await self._rpc(
            self._stubs()[0].AcquirePermit,
            args.request(self.client_id),
            "Permits.AcquirePermit",
            args.rpc_timeout(self.timeout),
        )
        if not r.granted:
            raise errors.PermitDenied(
                args.resource, args.partition, core.denial_reason(r.denial_reason), core.seconds_of(r.retry_after)
            )
        return AsyncPermit(self, args, r)

    async def _report(self, permit_id: str, rep: core.Report) -> Outcome:
        r = await self._rpc(self._stubs()[0].ReportOutcome, core.report_request(permit_id, rep), "Permits.ReportOutcome")
        return core.outcome_of(r, rep.status)

    async def _release(self, permit_id: str, refund: bool) -> None:
        try:
            await self._rpc(
                self._stubs()[0].ReleasePermit,
                permits_pb2.ReleasePermitRequest(permit_id=permit_id, refund=refund),
                "Permits.ReleasePermit",
            )
        except errors.NotFound:
            pass

    # ------------------------------------------------------------ permits

    async def acquire(
        self,
        resource: str,
        *,
        cost: Optional[Mapping[str, int]] = None,
        partition: str = "",
        max_wait: Optional[Seconds] = None,
        priority: int = 0,
        lease: Optional[Seconds] = None,
    ) -> AsyncPermit:
        """See :meth:`permitd.Client.acquire`."""
        return await self._acquire(core.acquire_args(resource, partition, cost, max_wait, priority, lease))

    def permit(
        self,
        resource: str,
        *,
        cost: Optional[Mapping[str, int]] = None,
        partition: str = "",
        max_wait: Optional[Seconds] = None,
        priority: int = 0,
        lease: Optional[Seconds] = None,
    ) -> AsyncPermitContext:
        """``async with client.permit("openai:gpt-4o", cost={"tokens": 1200}, max_wait=30) as p:``
        — see :meth:`permitd.Client.permit`."""
        return AsyncPermitContext(self, core.acquire_args(resource, partition, cost, max_wait, priority, lease))

    async def call(
        self,
        resource: str,
        fn: Callable[..., Union[Awaitable[T], T]],
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
        """See :meth:`permitd.Client.call`; ``fn`` may be ``async def`` (awaited) or plain."""
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
            p = await self._acquire(acq)
            resp: Any = None
            exc: Optional[BaseException] = None
            try:
                got = fn(*args, **kwargs)
                resp = await got if inspect.isawaitable(got) else got
            except retry_on as e:
                exc = e
                resp = core.response_of_exception(e)
            except BaseException as e:
                r = core.response_of_exception(e)
                if r is not None:
                    await asyncio.shield(p.report(r, attempt=attempt))
                else:
                    await asyncio.shield(p.release(refund=True))
                raise
            cost_used = actual_cost(resp) if (actual_cost is not None and resp is not None) else None
            outcome = await p.report(
                resp, status=None if resp is not None else 0, actual_cost=cost_used, attempt=attempt
            )
            give_up = max_attempts is not None and attempt >= max_attempts
            if outcome.retry and not give_up:
                await asyncio.sleep(outcome.retry_after)
                continue
            if outcome.retry or (
                core.is_failure(outcome.status)
                and (
                    await self.compute_backoff(
                        acq.resource,
                        attempt=attempt,
                        status=outcome.status,
                        headers=core.response_headers(resp) if resp is not None else None,
                    )
                ).give_up
            ):
                raise errors.RetriesExhausted(acq.resource, attempt, outcome.status, resp, exc) from exc
            if exc is not None:
                raise exc
            return resp  # type: ignore[no-any-return]

    async def compute_backoff(
        self,
        resource: str,
        *,
        attempt: int,
        status: int,
        headers: Optional[HeadersLike] = None,
        partition: str = "",
    ) -> BackoffAdvice:
        """See :meth:`permitd.Client.compute_backoff`."""
        req = permits_pb2.ComputeBackoffRequest(
            resource=core.check_name(resource, "resource"),
            attempt=core.check_int(attempt, "attempt", 1, (1 << 32) - 1),
            status_code=core.check_status(status),
            headers=core.check_headers(headers),
            partition=core.check_name(partition, "partition", required=False),
        )
        r = await self._rpc(self._stubs()[0].ComputeBackoff, req, "Permits.ComputeBackoff")
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
    ) -> AsyncIdempotent:
        """``async with client.idempotent(key, fingerprint=...) as op:`` — see
        :meth:`permitd.Client.idempotent`."""
        return AsyncIdempotent(
            self,
            core.check_key(key, "key"),
            core.fingerprint_of(fingerprint),
            core.check_seconds(ttl, "ttl", allow_zero=False),
            core.check_seconds(lock_ttl, "lock_ttl", allow_zero=False),
            core.check_seconds(wait, "wait", optional=False) or 0.0,
        )

    async def cache_get(self, namespace: str, key: str) -> Optional[bytes]:
        """See :meth:`permitd.Client.cache_get`."""
        req = cache_pb2.CacheGetRequest(
            namespace=core.check_key(namespace, "namespace", core.MAX_NAME_BYTES), key=core.check_key(key, "key")
        )
        r = await self._rpc(self._stubs()[3].Get, req, "Cache.Get")
        return bytes(r.value) if r.found else None

    async def cache_put(self, namespace: str, key: str, value: bytes, ttl: Optional[Seconds] = None) -> None:
        """See :meth:`permitd.Client.cache_put`."""
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
        await self._rpc(self._stubs()[3].Put, req, "Cache.Put")

    async def cache_delete(self, namespace: str, key: str) -> bool:
        """See :meth:`permitd.Client.cache_delete`."""
        req = cache_pb2.CacheDeleteRequest(
            namespace=core.check_key(namespace, "namespace", core.MAX_NAME_BYTES), key=core.check_key(key, "key")
        )
        return bool((await self._rpc(self._stubs()[3].Delete, req, "Cache.Delete")).deleted)

    def cached(
        self,
        namespace: str,
        ttl: Optional[Seconds] = None,
        *,
        name: Optional[str] = None,
        encode: Callable[[Any], bytes] = core.json_encode,
        decode: Callable[[bytes], Any] = core.json_decode,
    ) -> Callable[[AF], AF]:
        """Decorator for ``async def`` functions — see :meth:`permitd.Client.cached`. The
        wrapper has ``.cache_key(*args, **kwargs)`` and ``await .invalidate(*args, **kwargs)``."""
        ns = core.check_key(namespace, "namespace", core.MAX_NAME_BYTES)
        t = core.check_seconds(ttl, "ttl", allow_zero=False)
        core.check_callable(encode, "encode")
        core.check_callable(decode, "decode")
        if name is not None and not isinstance(name, str):
            raise TypeError("name must be a str")

        def decorate(fn: AF) -> AF:
            core.check_callable(fn)
            if not inspect.iscoroutinefunction(fn):
                raise TypeError("AsyncClient.cached wraps async def functions; use Client.cached otherwise")
            sig, fname = _signature(fn, name)

            def key_of(*args: Any, **kwargs: Any) -> str:
                return core.call_key(fname, sig, args, kwargs)

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                key = key_of(*args, **kwargs)
                hit = await self.cache_get(ns, key)
                if hit is not None:
                    return decode(hit)
                value = await fn(*args, **kwargs)
                await self.cache_put(ns, key, encode(value), t)
                return value

            async def invalidate(*args: Any, **kwargs: Any) -> bool:
                return await self.cache_delete(ns, key_of(*args, **kwargs))

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
    ) -> AsyncWatch:
        """``async with client.watch("openai:") as w: async for u in w:`` — see
        :meth:`permitd.Client.watch`."""
        req = core.watch_request(prefix, min_interval, partition_prefix, resource_buckets_only)
        return AsyncWatch(self._stubs()[1].Watch(req, metadata=self._metadata))

    async def get_summary(self, resource: str, *, prefix: str = "", top: int = 10) -> ResourceSummary:
        """See :meth:`permitd.Client.get_summary`."""
        req = core.summary_request(resource, prefix, top)
        return core.summary_of(await self._rpc(self._stubs()[1].GetSummary, req, "Quotas.GetSummary"))

    def partitions(
        self, resource: str, *, prefix: str = "", order: str = "name", page_size: int = 100
    ) -> AsyncIterator[QuotaUpdate]:
        """``async for u in client.partitions(resource):`` — see
        :meth:`permitd.Client.partitions`. Arguments are checked at once; the first call is
        made on the first ``__anext__``."""
        req = core.partitions_request(resource, prefix, order, page_size)
        return self._partition_pages(req)

    async def _partition_pages(self, req: quotas_pb2.ListPartitionsRequest) -> AsyncIterator[QuotaUpdate]:
        while True:
            r = await self._rpc(self._stubs()[1].ListPartitions, req, "Quotas.ListPartitions")
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
    ) -> AsyncSummaryWatch:
        """``async with client.watch_summaries("openai:") as w: async for s in w:`` — see
        :meth:`permitd.Client.watch_summaries`."""
        req = core.watch_summaries_request(prefix, partition_prefix, top, min_interval)
        return AsyncSummaryWatch(self._stubs()[1].WatchSummaries(req, metadata=self._metadata))

    async def get_quota(self, resource: str, *, partition: str = "") -> QuotaUpdate:
        """See :meth:`permitd.Client.get_quota`."""
        req = quotas_pb2.GetQuotaRequest(
            resource=core.check_name(resource, "resource"),
            partition=core.check_name(partition, "partition", required=False),
        )
        return core.quota_of(await self._rpc(self._stubs()[1].GetQuota, req, "Quotas.GetQuota"))

    async def put_resource(
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
        """See :meth:`permitd.Client.put_resource`."""
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
        r = await self._rpc(self._stubs()[1].PutResource, quotas_pb2.PutResourceRequest(resource=res), "Quotas.PutResource")
        stored: resource_pb2.Resource = r.resource
        return stored

    async def delete_resource(self, name: str) -> None:
        """See :meth:`permitd.Client.delete_resource`."""
        req = quotas_pb2.DeleteResourceRequest(name=core.check_name(name, "name"))
        await self._rpc(self._stubs()[1].DeleteResource, req, "Quotas.DeleteResource")

    async def reset_resource(self, name: str) -> int:
        """See :meth:`permitd.Client.reset_resource`."""
        req = quotas_pb2.ResetResourceRequest(name=core.check_name(name, "name"))
        r = await self._rpc(self._stubs()[1].ResetResource, req, "Quotas.ResetResource")
        return int(r.buckets)

