"""httpx transports that take a permit for every request, retries included.

Wrap the transport of any ``httpx`` (0.x) or ``httpx2`` client (the one the current
``openai`` and ``anthropic`` SDKs use); existing code keeps making its calls::

    import httpx2, openai, permitd, permitd.httpx, permitd.presets

    pd = permitd.Client()
    ai = openai.OpenAI(http_client=httpx2.Client(
        transport=permitd.httpx.PermitTransport(pd, rules=permitd.presets.openai())))

Each request a rule matches (:mod:`permitd.rules`) acquires a permit first, waiting in
permitd's queue up to the rule's ``max_wait``; the upstream's status and headers are
reported after (so permitd learns its limits and pauses everyone on a 429), with the real
cost read from the answer's ``usage`` — from the final event of a streamed answer when it
ends. A request that raises refunds its permit. A permit still denied answers a 429 with
``Retry-After`` and ``x-permitd-denied`` (the SDK's own retry then waits as permitd says;
``on_denied="raise"`` raises :class:`permitd.PermitDenied` instead). A request with an
``Idempotency-Key`` header runs under permitd's idempotency: a replay answers the stored
response without calling the upstream.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from typing import Any, AsyncIterator, Callable, Dict, Iterator, Optional, Sequence, Tuple

from . import _gate
from . import errors
from .aio import AsyncClient
from .client import Client
from .rules import Route, Rule, StreamUsage

__all__ = ["AsyncPermitTransport", "PermitTransport"]

# Hop-by-hop and body framing headers a stored (decoded, whole) body no longer matches.
_FRAMING = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection"})


def _module_of(request: Any) -> Any:
    """``httpx`` or ``httpx2``: whichever the request belongs to, so one transport serves
    both."""
    return sys.modules[type(request).__module__.split(".")[0]]


def _fingerprint(request: Any, body: bytes) -> str:
    return f"{request.method} {request.url} sha256:{hashlib.sha256(body).hexdigest()}"


def _replayed(mod: Any, request: Any, result: Any) -> Any:
    headers = {k: v for k, v in result.headers.items() if k.lower() not in _FRAMING}
    headers["x-permitd-replayed"] = "true"
    return mod.Response(result.status_code, headers=headers, content=result.body, request=request)


def _observable(route: Route, response: Any) -> Optional[StreamUsage]:
    if response.headers.get("content-encoding"):
        return None  # compressed events cannot be read on the way through
    return route.streamed(response.headers.get("content-type", ""))


class _Inner:
    """The wrapped transport, made on first use for the request's httpx flavour when none
    was given."""

    def __init__(self, transport: Any, kind: str) -> None:
        self._transport = transport
        self._kind = kind
        self._lock = threading.Lock()

    def get(self, mod: Any) -> Any:
        if self._transport is None:
            with self._lock:
                if self._transport is None:
                    self._transport = getattr(mod, self._kind)()
        return self._transport


_kinds: Dict[Tuple[type, type], type] = {}
_kinds_lock = threading.Lock()


def _stream_type(mod: Any, mixin: type, base: str) -> type:
    """``mixin`` as a subclass of the module's ``SyncByteStream``/``AsyncByteStream``, which
    httpx checks a transport's answer for."""
    parent = getattr(mod, base)
    with _kinds_lock:
        kind = _kinds.get((mixin, parent))
        if kind is None:
            kind = _kinds[(mixin, parent)] = type(mixin.__name__, (mixin, parent), {})
        return kind


class _Stream:
    """A streamed answer passed through as it is read, its events fed to ``usage``; the
    permit is reported once, when the stream ends or is closed."""

    def __init__(self, inner: Any, usage: StreamUsage, done: Callable[[], None]) -> None:
        self._inner = inner
        self._usage = usage
        self._done = done
        self._settled = False

    def _settle(self) -> None:
        if not self._settled:
            self._settled = True
            self._done()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._usage.feed(chunk)
            yield chunk

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._settle()


class PermitTransport:
    """A sync httpx transport: see the module's docs. ``client`` is a :class:`permitd.Client`;
    ``transport`` the one to wrap (default: a new ``HTTPTransport`` of the request's httpx);
    ``idempotency=False`` passes ``Idempotency-Key`` headers through untouched."""

    def __init__(
        self,
        client: Client,
        rules: Sequence[Rule],
        *,
        transport: Any = None,
        on_denied: str = "response",
        idempotency: bool = True,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a permitd.Client, not {type(client).__name__}")
        self._client = client
        self._gate = _gate.Gate(rules, on_denied, idempotency)
        self._inner = _Inner(transport, "HTTPTransport")

    def handle_request(self, request: Any) -> Any:
        mod = _module_of(request)
        inner = self._inner.get(mod)
        body = request.read()
        route = self._gate.route(request.method, str(request.url), request.headers, body)
        if route is None:
            return inner.handle_request(request)
        key = _gate.idempotency_key(request.headers) if self._gate.idempotency else None
        if key is None:
            return self._permitted(mod, inner, request, route, None)
        op = self._client.idempotent(key, fingerprint=_fingerprint(request, body))
        try:
            op.__enter__()
        except (errors.IdempotencyConflict, errors.IdempotencyInProgress) as e:
            return _gate.idempotency_answer(mod, request, e)
        with _gate.Held(op):
            if op.replayed:
                return _replayed(mod, request, op.result)
            return self._permitted(mod, inner, request, route, op)

    def _permitted(self, mod: Any, inner: Any, request: Any, route: Route, op: Any) -> Any:
        try:
            permit = self._client.acquire(
                route.resource,
                cost=route.cost,
                partition=route.partition,
                max_wait=route.max_wait,
                priority=route.priority,
            )
        except errors.PermitDenied as e:
            if op is not None:
                op.abandon()
            return mod.Response(429, headers=self._gate.denied(e), content=self._gate.denied_body(e), request=request)
        try:
            response = inner.handle_request(request)
        except BaseException:
            _gate.release(permit)
            raise
        at = time.monotonic()  # the headers are here; a stream's report comes later
        status, headers = response.status_code, dict(response.headers)
        usage = _observable(route, response) if op is None else None
        if usage is not None:
            return mod.Response(
                status,
                headers=response.headers,
                stream=_stream_type(mod, _Stream, "SyncByteStream")(
                    response.stream, usage, lambda: _gate.report(permit, status, headers, usage.cost or None, at)
                ),
                extensions=response.extensions,
                request=request,
            )
        actual = None
        if route.usage is not None or op is not None:
            try:
                content = response.read()
            except BaseException:
                _gate.report(permit, status, headers, None, at)
                raise
            actual = route.actual_cost(headers.get("content-type", ""), content)
            if op is not None:
                if _gate.storable(status):
                    op.complete(status=status, headers=headers, body=content)
                else:
                    op.abandon()
        _gate.report(permit, status, headers, actual, at)
        return response

    def close(self) -> None:
        t = self._inner._transport
        if t is not None:
            t.close()

    def __enter__(self) -> "PermitTransport":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncPermitTransport:
    """The asyncio twin of :class:`PermitTransport`, for ``httpx.AsyncClient`` (and
    ``openai.AsyncOpenAI``); ``client`` is a :class:`permitd.AsyncClient`."""

    def __init__(
        self,
        client: AsyncClient,
        rules: Sequence[Rule],
        *,
        transport: Any = None,
        on_denied: str = "response",
        idempotency: bool = True,
    ) -> None:
        if not isinstance(client, AsyncClient):
            raise TypeError(f"client must be a permitd.AsyncClient, not {type(client).__name__}")
        self._client = client
        self._gate = _gate.Gate(rules, on_denied, idempotency)
        self._inner = _Inner(transport, "AsyncHTTPTransport")

    async def handle_async_request(self, request: Any) -> Any:
        mod = _module_of(request)
        inner = self._inner.get(mod)
        body = await request.aread()
        route = self._gate.route(request.method, str(request.url), request.headers, body)
        if route is None:
            return await inner.handle_async_request(request)
        key = _gate.idempotency_key(request.headers) if self._gate.idempotency else None
        if key is None:
            return await self._permitted(mod, inner, request, route, None)
        op = self._client.idempotent(key, fingerprint=_fingerprint(request, body))
        try:
            await op.__aenter__()
        except (errors.IdempotencyConflict, errors.IdempotencyInProgress) as e:
            return _gate.idempotency_answer(mod, request, e)
        async with _gate.AsyncHeld(op):
            if op.replayed:
                return _replayed(mod, request, op.result)
            return await self._permitted(mod, inner, request, route, op)

    async def _permitted(self, mod: Any, inner: Any, request: Any, route: Route, op: Any) -> Any:
        try:
            permit = await self._client.acquire(
                route.resource,
                cost=route.cost,
                partition=route.partition,
                max_wait=route.max_wait,
                priority=route.priority,
            )
        except errors.PermitDenied as e:
            if op is not None:
                await op.abandon()
            return mod.Response(429, headers=self._gate.denied(e), content=self._gate.denied_body(e), request=request)
        try:
            response = await inner.handle_async_request(request)
        except BaseException:
            await _gate.arelease(permit)
            raise
        at = time.monotonic()
        status, headers = response.status_code, dict(response.headers)
        usage = _observable(route, response) if op is None else None
        if usage is not None:
            stream = _stream_type(mod, _AsyncStream, "AsyncByteStream")(
                response.stream, usage, permit, status, headers, at
            )
            return mod.Response(
                status, headers=response.headers, stream=stream, extensions=response.extensions, request=request
            )
        actual = None
        if route.usage is not None or op is not None:
            try:
                content = await response.aread()
            except BaseException:
                await _gate.areport(permit, status, headers, None, at)
                raise
            actual = route.actual_cost(headers.get("content-type", ""), content)
            if op is not None:
                if _gate.storable(status):
                    await op.complete(status=status, headers=headers, body=content)
                else:
                    await op.abandon()
        await _gate.areport(permit, status, headers, actual, at)
        return response

    async def aclose(self) -> None:
        t = self._inner._transport
        if t is not None:
            await t.aclose()

    async def __aenter__(self) -> "AsyncPermitTransport":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class _AsyncStream:
    def __init__(
        self, inner: Any, usage: StreamUsage, permit: Any, status: int, headers: Dict[str, str], at: float
    ) -> None:
        self._at = at
        self._inner = inner
        self._usage = usage
        self._permit = permit
        self._status = status
        self._headers = headers
        self._settled = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._usage.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if not self._settled:
                self._settled = True
                await _gate.areport(self._permit, self._status, self._headers, self._usage.cost or None, self._at)
