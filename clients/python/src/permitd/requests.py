"""A ``requests`` adapter that takes a permit for every request a rule matches::

    import requests, permitd, permitd.requests
    from permitd.rules import Rule

    s = requests.Session()
    s.mount("https://api.github.com/", permitd.requests.PermitAdapter(
        permitd.Client(), rules=[Rule("github:rest")]))

The same behaviour as :class:`permitd.httpx.PermitTransport`: acquire first (waiting in
permitd's queue), report the status and headers after, refund when the request raises, a
429 with ``Retry-After`` when still denied (or ``on_denied="raise"``), the real cost from
the JSON body's usage, ``Idempotency-Key`` requests replayed from permitd's store. With
``stream=True`` the body is left unread and only the status and headers are reported.
"""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any, Dict, Optional, Sequence

import requests
import requests.adapters
import requests.structures

from . import _gate
from . import errors
from .client import Client
from .rules import Route, Rule

__all__ = ["PermitAdapter"]

_FRAMING = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection"})


def _body(request: requests.PreparedRequest) -> bytes:
    b = request.body
    if isinstance(b, bytes):
        return b
    if isinstance(b, str):
        return b.encode()
    return b""  # a file or generator: not read here, so it can still be sent


def _response(request: requests.PreparedRequest, status: int, headers: Any, body: bytes) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.headers = requests.structures.CaseInsensitiveDict(headers)
    r._content = body
    r.raw = io.BytesIO(body)
    r.url = request.url or ""
    r.request = request
    r.reason = {409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests"}.get(status, "")
    r.encoding = requests.utils.get_encoding_from_headers(r.headers)
    return r


class PermitAdapter(requests.adapters.HTTPAdapter):
    """See the module's docs; ``client`` is a :class:`permitd.Client`. Other keyword
    arguments go to :class:`requests.adapters.HTTPAdapter` (``max_retries``, pool sizes)."""

    def __init__(
        self,
        client: Client,
        rules: Sequence[Rule],
        *,
        on_denied: str = "response",
        idempotency: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a permitd.Client, not {type(client).__name__}")
        self._permitd = client
        self._gate = _gate.Gate(rules, on_denied, idempotency)
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        body = _body(request)
        route = self._gate.route(request.method or "GET", request.url or "", request.headers, body)
        if route is None:
            return super().send(request, **kwargs)
        key = _gate.idempotency_key(request.headers) if self._gate.idempotency else None
        if key is None:
            return self._permitted(request, route, None, kwargs)
        fingerprint = f"{request.method} {request.url} sha256:{hashlib.sha256(body).hexdigest()}"
        op = self._permitd.idempotent(key, fingerprint=fingerprint)
        try:
            op.__enter__()
        except (errors.IdempotencyConflict, errors.IdempotencyInProgress) as e:
            return _response(request, *_gate.idempotency_status(e))
        with _gate.Held(op):
            if op.replayed and op.result is not None:
                res = op.result
                headers = {k: v for k, v in res.headers.items() if k.lower() not in _FRAMING}
                headers["x-permitd-replayed"] = "true"
                return _response(request, res.status_code, headers, res.body)
            return self._permitted(request, route, op, kwargs)

    def _permitted(self, request: requests.PreparedRequest, route: Route, op: Any, kwargs: Any) -> requests.Response:
        try:
            permit = self._permitd.acquire(
                route.resource,
                cost=route.cost,
                partition=route.partition,
                max_wait=route.max_wait,
                priority=route.priority,
            )
        except errors.PermitDenied as e:
            if op is not None:
                op.abandon()
            return _response(request, 429, self._gate.denied(e), self._gate.denied_body(e))
        try:
            response = super().send(request, **kwargs)
        except BaseException:
            _gate.release(permit)
            raise
        at = time.monotonic()
        status, headers = response.status_code, dict(response.headers)
        actual: Optional[Dict[str, int]] = None
        if (route.usage is not None and not kwargs.get("stream")) or op is not None:
            try:
                content = response.content
            except BaseException:
                _gate.report(permit, status, headers, None, at)
                raise
            actual = route.actual_cost(headers.get("Content-Type", headers.get("content-type", "")), content)
            if op is not None:
                if _gate.storable(status):
                    op.complete(status=status, headers=headers, body=content)
                else:
                    op.abandon()
        _gate.report(permit, status, headers, actual, at)
        return response

