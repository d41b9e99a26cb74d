"""Python client for permitd, the rate-limit coordination service.

Ask permitd before each call to a rate-limited API, and tell it what the API answered::

    import permitd, requests

    client = permitd.Client()  # $PERMITD_TARGET, else 127.0.0.1:50051
    with client.permit("openai:gpt-4o", cost={"tokens": 1200}, max_wait=30) as p:
        p.report(requests.post(URL, json=body))

:class:`AsyncClient` has the same shape for asyncio (``async with``, ``await``).
"""

from ._core import (
    Backoff,
    BackoffAdvice,
    DimensionQuota,
    LearnedLimit,
    Limit,
    Outcome,
    QuotaUpdate,
    ResourceSummary,
    StoredResult,
    stable_hash,
)
from .aio import AsyncClient, AsyncIdempotent, AsyncPermit, AsyncSummaryWatch, AsyncWatch
from .client import Client, Idempotent, Permit, SummaryWatch, Watch
from .errors import (
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PermitDenied,
    PermitdError,
    PermitdUnavailable,
    RetriesExhausted,
    Unauthenticated,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncIdempotent",
    "AsyncPermit",
    "AsyncSummaryWatch",
    "AsyncWatch",
    "Backoff",
    "BackoffAdvice",
    "Client",
    "DimensionQuota",
    "IdempotencyConflict",
    "IdempotencyInProgress",
    "Idempotent",
    "InvalidArgument",
    "LearnedLimit",
    "Limit",
    "NotFound",
    "PermissionDenied",
    "Outcome",
    "Permit",
    "PermitDenied",
    "PermitdError",
    "PermitdUnavailable",
    "Unauthenticated",
    "QuotaUpdate",
    "ResourceSummary",
    "RetriesExhausted",
    "StoredResult",
    "SummaryWatch",
    "Watch",
    "stable_hash",
]
