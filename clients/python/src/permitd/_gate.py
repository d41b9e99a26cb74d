"""What the HTTP transports (httpx, requests) share: routing a request to a permit, the
answer a denied permit gets, and settling the permit from the upstream's answer."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import errors
from .rules import Request, Route, Rule, check_rules, route

log = logging.getLogger("permitd")

#: The header that marks an answer permitd made (a denied permit), not the upstream.
DENIED_HEADER = "x-permitd-denied"
ON_DENIED = ("response", "raise")


class Gate:
    def __init__(self, rules: Sequence[Rule], on_denied: str, idempotency: bool) -> None:
        self.rules: List[Rule] = check_rules(rules)
        if on_denied not in ON_DENIED:
            raise ValueError(f"on_denied must be one of {ON_DENIED}, not {on_denied!r}")
        self.on_denied = on_denied
        self.idempotency = idempotency

    def route(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Optional[Route]:
        return route(self.rules, Request.of(method, url, headers, body))

    def denied(self, e: errors.PermitDenied) -> Dict[str, str]:
        """The headers of the 429 a denied permit answers (``on_denied="response"``), so an
        SDK's own retry waits as permitd advises; raises when ``on_denied="raise"``."""
        if self.on_denied == "raise":
            raise e
        secs = max(float(e.retry_after or 0.0), 0.0)
        return {
            "retry-after": str(max(1, math.ceil(secs))),
            "retry-after-ms": str(max(1, math.ceil(secs * 1000))),
            DENIED_HEADER: e.reason or "denied",
            "content-type": "application/json",
        }

    @staticmethod
    def denied_body(e: errors.PermitDenied) -> bytes:
        import json

        return json.dumps(
            {"error": {"type": "permitd_denied", "message": str(e), "retry_after": e.retry_after}}
        ).encode()


class Held:
    """Exits an idempotency claim already entered (its entry's errors answered apart)."""

    def __init__(self, op: Any) -> None:
        self.op = op

    def __enter__(self) -> Any:
        return self.op

    def __exit__(self, et: Any, exc: Any, tb: Any) -> None:
        self.op.__exit__(et, exc, tb)


class AsyncHeld(Held):
    async def __aenter__(self) -> Any:
        return self.op

    async def __aexit__(self, et: Any, exc: Any, tb: Any) -> None:
        await self.op.__aexit__(et, exc, tb)


def idempotency_status(e: errors.PermitdError) -> Tuple[int, Dict[str, str], bytes]:
    """The answer to a request whose Idempotency-Key can't run: 422 when the key was used
    for another request (a retry can't help), 409 while another attempt holds it (a retry
    later can), with ``Retry-After``."""
    import json

    headers = {"content-type": "application/json"}
    if isinstance(e, errors.IdempotencyInProgress):
        status, kind = 409, "idempotency_in_progress"
        headers["retry-after"] = str(max(1, math.ceil(float(e.retry_after or 1.0))))
    else:
        status, kind = 422, "idempotency_conflict"
    headers[DENIED_HEADER] = kind
    return status, headers, json.dumps({"error": {"type": kind, "message": str(e)}}).encode()


def idempotency_answer(mod: Any, request: Any, e: errors.PermitdError) -> Any:
    """:func:`idempotency_status` as an httpx (or httpx2) response."""
    status, headers, body = idempotency_status(e)
    return mod.Response(status, headers=headers, content=body, request=request)


def idempotency_key(headers: Mapping[str, str]) -> Optional[str]:
    for k, v in headers.items():
        if str(k).lower() == "idempotency-key" and v:
            return str(v)
    return None


def storable(status: int) -> bool:
    """Answers a replay may give again: not a 429 or a server error, which a retry should
    make anew."""
    return 0 < status < 500 and status != 429


def report(
    permit: Any, status: int, headers: Mapping[str, str], actual: Optional[Dict[str, int]], answered_at: Optional[float] = None
) -> None:
    """Settle ``permit`` with the upstream's answer (which arrived at ``answered_at``, a
    ``time.monotonic()``); never fails the caller's request."""
    try:
        permit.report(status=status, headers=dict(headers), actual_cost=actual, answered_at=answered_at)
    except (errors.PermitdError, RuntimeError) as e:
        log.warning("permitd: could not report permit %s: %s", permit.permit_id, e)


def release(permit: Any) -> None:
    try:
        permit.release(refund=True)
    except errors.PermitdError as e:
        log.warning("permitd: could not release permit %s: %s", permit.permit_id, e)


async def areport(
    permit: Any, status: int, headers: Mapping[str, str], actual: Optional[Dict[str, int]], answered_at: Optional[float] = None
) -> None:
    try:
        await permit.report(status=status, headers=dict(headers), actual_cost=actual, answered_at=answered_at)
    except (errors.PermitdError, RuntimeError) as e:
        log.warning("permitd: could not report permit %s: %s", permit.permit_id, e)


async def arelease(permit: Any) -> None:
    try:
        await permit.release(refund=True)
    except errors.PermitdError as e:
        log.warning("permitd: could not release permit %s: %s", permit.permit_id, e)
