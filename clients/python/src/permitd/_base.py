"""State shared by the sync and async permit and idempotency handles (no I/O)."""

from __future__ import annotations

import datetime as _dt
from typing import Dict, Optional

from . import _core as core
from . import errors
from ._core import Outcome, StoredResult
from .v1 import idempotency_pb2, permits_pb2


class _PermitBase:
    def __init__(self, args: core.AcquireArgs, r: permits_pb2.AcquirePermitResponse) -> None:
        self.resource = args.resource
        self.partition = args.partition
        self.cost: Dict[str, int] = dict(args.cost)
        self.permit_id: str = r.permit_id
        self.lease_expires_at: Optional[_dt.datetime] = core.time_of(r, "lease_expires_at")
        self.waited: float = core.seconds_of(r.waited)
        self.remaining: Dict[str, int] = dict(r.remaining)
        self.outcome: Optional[Outcome] = None
        self.done = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.resource!r}, id={self.permit_id!r}, done={self.done})"


class _IdempotentBase:
    def __init__(
        self,
        key: str,
        fingerprint: str,
        ttl: Optional[float],
        lock_ttl: Optional[float],
        wait: float,
    ) -> None:
        self.key = key
        self.fingerprint = fingerprint
        self._ttl = ttl
        self._lock_ttl = lock_ttl
        self._wait = wait
        self._lock_token = ""
        self.replayed = False
        self.result: Optional[StoredResult] = None
        self.completed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r}, replayed={self.replayed}, completed={self.completed})"

    def _begin_request(self) -> idempotency_pb2.BeginRequest:
        req = idempotency_pb2.BeginRequest(key=self.key, fingerprint=self.fingerprint)
        if self._ttl is not None:
            req.ttl.CopyFrom(core.duration(self._ttl))
        if self._lock_ttl is not None:
            req.lock_ttl.CopyFrom(core.duration(self._lock_ttl))
        return req

    def _accept(self, r: idempotency_pb2.BeginResponse) -> Optional[float]:
        """Apply a Begin answer; the seconds to wait when IN_PROGRESS, else None."""
        state = core.idem_state(r.state)
        if state == "ACQUIRED":
            self._lock_token = str(getattr(r, "lock_token", ""))
            return None
        if state == "COMPLETED":
            self.replayed = True
            self.completed = True
            self.result = core.stored_of(r.result)
            return None
        if state == "FINGERPRINT_MISMATCH":
            raise errors.IdempotencyConflict(self.key)
        if state == "IN_PROGRESS":
            return max(core.seconds_of(r.retry_after), 0.01)
        raise errors.PermitdError(f"idempotency key {self.key!r}: unexpected state {state}")

    def _complete_request(self, msg: idempotency_pb2.StoredResult) -> idempotency_pb2.CompleteRequest:
        req = idempotency_pb2.CompleteRequest(key=self.key, result=msg)
        # Newer protos carry a lock token; older generated code simply has no such field.
        if self._lock_token and core.has_field(idempotency_pb2.CompleteRequest, "lock_token"):
            setattr(req, "lock_token", self._lock_token)  # noqa: B010 (absent from older stubs)
        return req

    def _abandon_request(self) -> idempotency_pb2.AbandonRequest:
        req = idempotency_pb2.AbandonRequest(key=self.key)
        if self._lock_token and core.has_field(idempotency_pb2.AbandonRequest, "lock_token"):
            setattr(req, "lock_token", self._lock_token)  # noqa: B010 (absent from older stubs)
        return req

    def _check_not_completed(self) -> None:
        if self.completed:
            raise RuntimeError(f"idempotency key {self.key!r} is already completed")
