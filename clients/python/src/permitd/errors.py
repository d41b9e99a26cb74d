"""Exceptions raised by the permitd client.

Every error from the server or the transport is a :class:`PermitdError`. Bad arguments are
caught by the client before any call and raise plain :class:`ValueError` /
:class:`TypeError`; a bad argument that only the server can judge raises
:class:`InvalidArgument`, which is also a :class:`ValueError`.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "PermitdError",
    "PermitdUnavailable",
    "PermitDenied",
    "InvalidArgument",
    "NotFound",
    "RetriesExhausted",
    "IdempotencyConflict",
    "IdempotencyInProgress",
]


class PermitdError(Exception):
    """Base class of every error the client raises about permitd or the upstream.

    ``code`` is the gRPC status code name (``"UNAVAILABLE"``, ``"NOT_FOUND"`` …) when the
    error came from an RPC, else ``None``.
    """

    def __init__(self, message: str, *, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> Any:
        # Pickled as they are, not through __init__ (whose arguments differ per class), so
        # they cross processes intact: Celery's result backend, multiprocessing.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: Any, args: Any, state: Any) -> Any:
    e = cls.__new__(cls)
    Exception.__init__(e, *args)
    e.__dict__.update(state)
    return e


class PermitdUnavailable(PermitdError):
    """permitd could not be reached, is shutting down, or did not answer in time."""


class InvalidArgument(PermitdError, ValueError):
    """The server refused a request field (``INVALID_ARGUMENT``); the message names it."""


class NotFound(PermitdError, LookupError):
    """Unknown resource, permit or key (``NOT_FOUND``)."""


class Unauthenticated(PermitdError):
    """No credential, an unknown token or an untrusted certificate (``UNAUTHENTICATED``)."""


class PermissionDenied(PermitdError, PermissionError):
    """The caller's role (or priority ceiling) does not allow the call
    (``PERMISSION_DENIED``); the message names what is missing."""


class PermitDenied(PermitdError):
    """A permit was not granted.

    ``retry_after`` is the number of seconds after which a retry can succeed (never zero),
    ``reason`` one of ``RATE_LIMITED``, ``CONCURRENCY_LIMITED``, ``COOLDOWN``,
    ``QUEUE_TIMEOUT``, ``QUEUE_FULL``.
    """

    def __init__(self, resource: str, partition: str, reason: str, retry_after: float) -> None:
        where = f"{resource}" + (f" [{partition}]" if partition else "")
        super().__init__(f"permit for {where} denied: {reason}, retry after {retry_after:.3f}s")
        self.resource = resource
        self.partition = partition
        self.reason = reason
        self.retry_after = retry_after


class RetriesExhausted(PermitdError):
    """The retry helper gave up: the resource's backoff policy (or ``max_attempts``) allows
    no more attempts.

    ``last_response`` is the upstream's last answer (``None`` when the last attempt raised
    instead; that exception is ``last_exception`` and the ``__cause__``), ``attempts`` how
    many calls were made, ``status`` the last status (0 = no answer).
    """

    def __init__(
        self,
        resource: str,
        attempts: int,
        status: int,
        last_response: Any = None,
        last_exception: Optional[BaseException] = None,
    ) -> None:
        what = f"status {status}" if status else f"no answer ({last_exception!r})"
        super().__init__(f"{resource}: gave up after {attempts} attempt(s), last {what}")
        self.resource = resource
        self.attempts = attempts
        self.status = status
        self.last_response = last_response
        self.last_exception = last_exception


class IdempotencyConflict(PermitdError):
    """The idempotency key was already used for a request with another fingerprint."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was used for a different request")
        self.key = key


class IdempotencyInProgress(PermitdError):
    """Another worker still holds the idempotency key after waiting ``wait`` seconds."""

    def __init__(self, key: str, retry_after: float) -> None:
        super().__init__(
            f"idempotency key {key!r} is held by another worker; retry after {retry_after:.3f}s"
        )
        self.key = key
        self.retry_after = retry_after
