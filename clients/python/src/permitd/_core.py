"""What the sync and async clients share: argument checks, proto conversion, result types,
duck-typed HTTP responses and stable hashing. No I/O here."""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import inspect
import json
import math
import time
import os
import re
import uuid
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from . import errors
from .v1 import idempotency_pb2, permits_pb2, quotas_pb2, resource_pb2

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "PERMITD_TARGET"
TOKEN_ENV = "PERMITD_TOKEN"
TENANT_HEADER = "x-permitd-tenant"
MAX_NAME_BYTES = 200
MAX_KEY_BYTES = 255
MAX_FINGERPRINT_BYTES = 512
_NAME_RE = re.compile(r"\A[A-Za-z0-9._:/@-]*\Z")
_DIMENSION_RE = re.compile(r"\A[A-Za-z0-9._:/@-]{1,64}\Z")
# Largest value of a proto uint64.
_U64 = (1 << 64) - 1
# Longest duration the client sends (a year and a bit); the server checks its own bounds.
_MAX_SECONDS = 400 * 24 * 3600

Seconds = Union[int, float, _dt.timedelta]
"""A duration: seconds as an int or float, or a :class:`datetime.timedelta`."""

HeadersLike = Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]


# ---------------------------------------------------------------- argument checks


def check_target(target: Optional[str]) -> str:
    if target is None:
        target = os.environ.get(TARGET_ENV) or DEFAULT_TARGET
    if not isinstance(target, str):
        raise TypeError(f"target must be a str such as '127.0.0.1:50051', not {type(target).__name__}")
    if not target.strip():
        raise ValueError("target must not be empty")
    return target


PemLike = Union[bytes, str, "os.PathLike[str]"]
"""PEM data as bytes, or the path of a PEM file."""


def _pem(value: Optional[PemLike], field: str) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, (str, os.PathLike)):
        try:
            with open(value, "rb") as f:
                return f.read()
        except OSError as e:
            raise ValueError(f"{field}: cannot read {value!s}: {e.strerror}") from e
    raise TypeError(f"{field} must be PEM bytes or a file path, not {type(value).__name__}")


def security(
    *,
    token: Optional[str],
    tenant: Optional[str],
    root_certificates: Optional[PemLike],
    client_cert: Optional[PemLike],
    client_key: Optional[PemLike],
    credentials: Optional[grpc.ChannelCredentials],
) -> Tuple[Optional[grpc.ChannelCredentials], Tuple[Tuple[str, str], ...]]:
    """The channel credentials (``None``: plaintext) and the metadata every call carries:
    the bearer token (argument, else ``$PERMITD_TOKEN``) and the tenant an operator acts
    for. The token travels as call metadata, so it works over TLS and over plaintext to a
    loopback server alike."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    metadata: list[Tuple[str, str]] = []
    if token is not None:
        if not isinstance(token, str) or not token.strip() or not token.isascii() or any(c in token for c in "\r\n"):
            raise ValueError("token must be a non-empty ASCII str (permitd token new prints one)")
        metadata.append(("authorization", f"Bearer {token.strip()}"))
    if tenant is not None:
        metadata.append((TENANT_HEADER, check_name(tenant, "tenant")))
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together")
    tls = root_certificates is not None or client_cert is not None
    if tls and credentials is not None:
        raise ValueError("give either credentials or root_certificates/client_cert/client_key, not both")
    if tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(root_certificates, "root_certificates"),
            private_key=_pem(client_key, "client_key"),
            certificate_chain=_pem(client_cert, "client_cert"),
        )
    return credentials, tuple(metadata)


def check_name(value: Any, field: str, *, required: bool = True) -> str:
    """A resource or partition name: 1 (0 when not required) to 200 bytes of
    ``[A-Za-z0-9._:/@-]``."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    if required and not value:
        raise ValueError(f"{field} must not be empty")
    if len(value.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"{field} is {len(value.encode())} bytes, at most {MAX_NAME_BYTES}")
    if not _NAME_RE.match(value):
        raise ValueError(f"{field} {value!r} may only hold letters, digits and . _ : / @ -")
    return value


def check_key(value: Any, field: str, max_bytes: int = MAX_KEY_BYTES) -> str:
    """An idempotency or cache key (or cache namespace): 1 to ``max_bytes`` bytes, no control
    characters."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{field} must not be empty")
    n = len(value.encode())
    if n > max_bytes:
        raise ValueError(f"{field} is {n} bytes, at most {max_bytes}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ValueError(f"{field} must not contain control characters")
    return value


def check_int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{field} must be between {lo} and {hi}, not {value}")
    return int(value)


def check_seconds(
    value: Any, field: str, *, allow_zero: bool = True, optional: bool = True
) -> Optional[float]:
    """Seconds (int, float or timedelta) -> float, or None when absent and optional."""
    if value is None:
        if optional:
            return None
        raise TypeError(f"{field} is required")
    if isinstance(value, _dt.timedelta):
        secs = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{field} must be seconds (int or float) or a timedelta, not {type(value).__name__}"
        )
    else:
        secs = float(value)
    if math.isnan(secs) or math.isinf(secs):
        raise ValueError(f"{field} must be finite, not {secs}")
    if secs < 0 or (secs == 0 and not allow_zero):
        raise ValueError(f"{field} must be {'>=' if allow_zero else '>'} 0 seconds, not {secs}")
    if secs > _MAX_SECONDS:
        raise ValueError(f"{field} must be at most {_MAX_SECONDS} seconds, not {secs}")
    return secs


def check_cost(value: Any, field: str) -> Dict[str, int]:
    """A cost map: dimension name -> non-negative int."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{field} must be a mapping such as {{'tokens': 1200}}, not {type(value).__name__}")
    out: Dict[str, int] = {}
    for dim, amount in value.items():
        if not isinstance(dim, str):
            raise TypeError(f"{field} keys must be str dimension names, not {type(dim).__name__}")
        if not _DIMENSION_RE.match(dim):
            raise ValueError(f"{field}: dimension {dim!r} must be 1-64 bytes of [A-Za-z0-9._:/@-]")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"{field}[{dim!r}] must be an int, not {type(amount).__name__}")
        if not 0 <= amount <= _U64:
            raise ValueError(f"{field}[{dim!r}] must be a non-negative int, not {amount}")
        out[dim] = amount
    return out


def check_status(value: Any, field: str = "status") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int HTTP status, not {type(value).__name__}")
    if not 0 <= value <= 999:
        raise ValueError(f"{field} must be an HTTP status 0-999 (0 = no answer), not {value}")
    return int(value)


def check_headers(value: Any, field: str = "headers") -> Dict[str, str]:
    """Headers as a mapping or (name, value) pairs -> one str per lower-cased name
    (repeated names joined with ', ', as HTTP allows)."""
    if value is None:
        return {}
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{field} must be a mapping or (name, value) pairs, not {type(value).__name__}")
    items: Any
    multi = getattr(value, "multi_items", None)  # httpx.Headers keeps repeated names apart
    if callable(multi):
        items = multi()
    elif hasattr(value, "items"):
        items = value.items()
    elif isinstance(value, Iterable):
        items = value
    else:
        raise TypeError(f"{field} must be a mapping or (name, value) pairs, not {type(value).__name__}")
    out: Dict[str, str] = {}
    for pair in items:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"{field} must be a mapping or (name, value) pairs, found {pair!r}")
        name, val = pair
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(val, bytes):
            val = val.decode("latin-1")
        if not isinstance(name, str):
            raise TypeError(f"{field} names must be str, not {type(name).__name__}")
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise TypeError(f"{field}[{name!r}] must be a str, not {type(val).__name__}")
        key = name.lower()
        out[key] = f"{out[key]}, {val}" if key in out else str(val)
    return out


def check_callable(fn: Any, field: str = "fn") -> None:
    if not callable(fn):
        raise TypeError(f"{field} must be callable, not {type(fn).__name__}")


# ---------------------------------------------------------------- proto conversion


def duration(secs: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    whole = math.floor(secs)
    d.seconds = int(whole)
    d.nanos = int(round((secs - whole) * 1e9))
    if d.nanos >= 1_000_000_000:
        d.seconds += 1
        d.nanos -= 1_000_000_000
    return d


def seconds_of(d: duration_pb2.Duration) -> float:
    return float(d.seconds + d.nanos / 1e9)


def time_of(msg: Any, field: str) -> Optional[_dt.datetime]:
    if not msg.HasField(field):
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, field)
    return _dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=_dt.timezone.utc)


def _enum_suffix(enum_type: Any, value: int, prefix: str) -> str:
    try:
        name: str = enum_type.Name(value)
    except ValueError:
        return str(value)
    return name[len(prefix):] if name.startswith(prefix) else name


def map_rpc_error(e: grpc.RpcError, what: str) -> errors.PermitdError:
    """A gRPC error -> the client's exception (chain it with ``from e``)."""
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    name = code.name if code is not None else "UNKNOWN"
    msg = f"{what}: {details or name}"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return errors.PermitdUnavailable(f"{msg} ({name})", code=name)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.InvalidArgument(msg, code=name)
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(msg, code=name)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return errors.Unauthenticated(msg, code=name)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return errors.PermissionDenied(msg, code=name)
    return errors.PermitdError(f"{msg} ({name})", code=name)


def has_field(message_type: Any, name: str) -> bool:
    """Whether the generated message knows a field (newer protos add fields; old generated
    code must still work)."""
    return name in message_type.DESCRIPTOR.fields_by_name


# ---------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class LearnedLimit:
    """What permitd learned from one upstream header."""

    dimension: str
    limit: int
    remaining: int
    reset_at: Optional[_dt.datetime]
    source: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    """permitd's answer to a report: whether and when to retry, a cooldown in force for every
    worker, and what the headers taught it."""

    retry: bool
    retry_after: float
    cooldown_until: Optional[_dt.datetime]
    learned: Tuple[LearnedLimit, ...]
    status: int


@dataclasses.dataclass(frozen=True)
class BackoffAdvice:
    """``ComputeBackoff``'s answer."""

    retry: bool
    retry_after: float
    give_up: bool


@dataclasses.dataclass(frozen=True)
class DimensionQuota:
    """One dimension's state in a bucket."""

    dimension: str
    limit: int
    remaining: int
    reset_at: Optional[_dt.datetime]
    source: str  # "CONFIG", "LEARNED" or "ADAPTIVE"
    period: float
    reason: str = ""  # why the limit is what it is, in words
    rate_per_second: float = 0.0


@dataclasses.dataclass(frozen=True)
class QuotaUpdate:
    """The state of one bucket (a resource, or one partition of it)."""

    resource: str
    partition: str
    dimensions: Tuple[DimensionQuota, ...]
    in_flight: int
    concurrency: int
    queue_depth: int
    cooldown_until: Optional[_dt.datetime]
    granted_total: int
    denied_total: int
    upstream_429_total: int
    at: Optional[_dt.datetime]
    probing: bool = False  # slow start: the upstream has not confirmed the limits yet
    cooldown_reason: str = ""  # why the cooldown is in force (status or header, capped or not)

    @property
    def remaining(self) -> Dict[str, int]:
        """Dimension -> units available now."""
        return {d.dimension: d.remaining for d in self.dimensions}


@dataclasses.dataclass(frozen=True)
class ResourceSummary:
    """One resource at a glance: its resource-wide bucket, totals over its live partitions
    (those under the partition prefix asked for) and the partitions under most pressure.
    A resource that is not per partition has no partitions; ``resource_bucket`` is all of
    it."""

    resource: str
    resource_bucket: Optional[QuotaUpdate]  # None for a per-partition resource without shared limits
    per_partition: bool
    live_partitions: int
    in_flight: int  # leases held, over the partitions
    queue_depth: int  # callers waiting, over the partitions
    near_empty: int  # partitions with at most 10 % left of their tightest limit
    near_empty_share: float  # near_empty / live_partitions (0 without partitions)
    cooling_down: int  # partitions paused after an upstream 429/503
    probing: int  # partitions in slow start
    granted_total: int
    denied_total: int
    upstream_429_total: int
    granted_per_second: float  # over rate_window
    denied_per_second: float
    rate_window: float  # seconds the rates were measured over (0 for the first reading)
    top: Tuple[QuotaUpdate, ...]  # most pressed first
    at: Optional[_dt.datetime]  # when the partitions were read
    version: int  # equal versions are the same reading


@dataclasses.dataclass(frozen=True)
class StoredResult:
    """The stored result of a call made under an idempotency key. Looks enough like an
    HTTP response for most code: ``status_code``/``status``, ``headers``, ``content``,
    ``text`` and ``json()``."""

    status_code: int
    headers: Dict[str, str]
    body: bytes
    metadata: Dict[str, str]

    @property
    def status(self) -> int:
        return self.status_code

    @property
    def content(self) -> bytes:
        return self.body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclasses.dataclass(frozen=True)
class Limit:
    """``amount`` units of ``dimension`` per ``period`` seconds (``burst`` 0 = ``amount``);
    ``scope`` None follows the resource's ``per_partition``, else ``"resource"`` or
    ``"partition"``."""

    dimension: str
    amount: int
    period: Seconds
    burst: int = 0
    scope: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Backoff:
    """A resource's retry policy; None fields take the server's defaults."""

    kind: str = "full_jitter"
    base: Optional[Seconds] = None
    max: Optional[Seconds] = None
    multiplier: float = 0.0
    max_attempts: int = 0
    max_retry_after: Optional[Seconds] = None


def outcome_of(r: permits_pb2.ReportOutcomeResponse, status: int) -> Outcome:
    return Outcome(
        retry=r.retry,
        retry_after=seconds_of(r.retry_after),
        cooldown_until=time_of(r, "cooldown_until"),
        learned=tuple(
            LearnedLimit(
                dimension=l.dimension,
                limit=l.limit,
                remaining=l.remaining,
                reset_at=time_of(l, "reset_at"),
                source=l.source,
            )
            for l in r.learned
        ),
        status=status,
    )


def quota_of(u: quotas_pb2.QuotaUpdate) -> QuotaUpdate:
    return QuotaUpdate(
        resource=u.resource,
        partition=u.partition,
        dimensions=tuple(
            DimensionQuota(
                dimension=d.dimension,
                limit=d.limit,
                remaining=d.remaining,
                reset_at=time_of(d, "reset_at"),
                source=_enum_suffix(quotas_pb2.LimitSource, d.source, "LIMIT_SOURCE_"),
                period=seconds_of(d.period),
                reason=d.reason,
                rate_per_second=d.rate_per_second,
            )
            for d in u.dimensions
        ),
        in_flight=u.in_flight,
        concurrency=u.concurrency,
        queue_depth=u.queue_depth,
        cooldown_until=time_of(u, "cooldown_until"),
        granted_total=u.granted_total,
        denied_total=u.denied_total,
        upstream_429_total=u.upstream_429_total,
        at=time_of(u, "at"),
        probing=u.probing,
        cooldown_reason=getattr(u, "cooldown_reason", ""),
    )


def summary_of(m: quotas_pb2.ResourceSummary) -> ResourceSummary:
    return ResourceSummary(
        resource=m.resource,
        resource_bucket=quota_of(m.resource_bucket) if m.HasField("resource_bucket") else None,
        per_partition=m.per_partition,
        live_partitions=m.live_partitions,
        in_flight=m.in_flight,
        queue_depth=m.queue_depth,
        near_empty=m.near_empty,
        near_empty_share=m.near_empty_share,
        cooling_down=m.cooling_down,
        probing=m.probing,
        granted_total=m.granted_total,
        denied_total=m.denied_total,
        upstream_429_total=m.upstream_429_total,
        granted_per_second=m.granted_per_second,
        denied_per_second=m.denied_per_second,
        rate_window=seconds_of(m.rate_window),
        top=tuple(quota_of(u) for u in m.top),
        at=time_of(m, "at"),
        version=m.version,
    )


def stored_of(r: idempotency_pb2.StoredResult) -> StoredResult:
    return StoredResult(
        status_code=r.status_code,
        headers=dict(r.headers),
        body=bytes(r.body),
        metadata=dict(r.metadata),
    )


def denial_reason(value: int) -> str:
    return _enum_suffix(permits_pb2.DenialReason, value, "DENIAL_REASON_")


def idem_state(value: int) -> str:
    return _enum_suffix(idempotency_pb2.IdempotencyState, value, "IDEMPOTENCY_STATE_")


# ---------------------------------------------------------------- requests


@dataclasses.dataclass(frozen=True)
class AcquireArgs:
    resource: str
    partition: str
    cost: Dict[str, int]
    max_wait: Optional[float]
    priority: int
    lease: Optional[float]

    def request(self, client_id: str) -> permits_pb2.AcquirePermitRequest:
        req = permits_pb2.AcquirePermitRequest(
            resource=self.resource,
            partition=self.partition,
            cost=self.cost,
            priority=self.priority,
            client_id=client_id,
        )
        if self.max_wait:
            req.max_wait.CopyFrom(duration(self.max_wait))
        if self.lease is not None:
            req.lease.CopyFrom(duration(self.lease))
        return req

    def rpc_timeout(self, base: float) -> float:
        """The gRPC deadline: the queue wait plus the client's per-call timeout, so the
        server answers QUEUE_TIMEOUT before the deadline cuts the call."""
        return (self.max_wait or 0.0) + base


def acquire_args(
    resource: Any,
    partition: Any,
    cost: Any,
    max_wait: Any,
    priority: Any,
    lease: Any,
) -> AcquireArgs:
    return AcquireArgs(
        resource=check_name(resource, "resource"),
        partition=check_name(partition, "partition", required=False),
        cost=check_cost(cost, "cost"),
        max_wait=check_seconds(max_wait, "max_wait"),
        priority=check_int(priority, "priority", -(1 << 31), (1 << 31) - 1),
        lease=check_seconds(lease, "lease", allow_zero=False),
    )


#: Most partitions a summary names (``top``).
MAX_TOP = 100
#: Most partitions per page of ``partitions()``.
MAX_PAGE_SIZE = 1000
_PARTITION_ORDERS: Dict[str, quotas_pb2.PartitionOrder] = {
    "name": quotas_pb2.PARTITION_ORDER_NAME,
    "pressure": quotas_pb2.PARTITION_ORDER_PRESSURE,
}


def _check_prefix(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str")
    if value:
        check_name(value, field)
    return value


def check_order(value: Any) -> quotas_pb2.PartitionOrder:
    """A partition order, ``"name"`` or ``"pressure"`` -> the proto enum."""
    if not isinstance(value, str):
        raise TypeError(f"order must be 'name' or 'pressure', not {type(value).__name__}")
    if value not in _PARTITION_ORDERS:
        raise ValueError(f"order must be 'name' or 'pressure', not {value!r}")
    return _PARTITION_ORDERS[value]


def watch_request(
    prefix: Any, min_interval: Any, partition_prefix: Any, resource_buckets_only: Any
) -> quotas_pb2.WatchRequest:
    req = quotas_pb2.WatchRequest(resource_prefix=_check_prefix(prefix, "prefix"))
    mi = check_seconds(min_interval, "min_interval")
    if mi is not None:
        req.min_interval.CopyFrom(duration(mi))
    pp = _check_prefix(partition_prefix, "partition_prefix")
    if not isinstance(resource_buckets_only, bool):
        raise TypeError(f"resource_buckets_only must be a bool, not {type(resource_buckets_only).__name__}")
    if pp and resource_buckets_only:
        # A partition prefix leaves out the resource-wide buckets; together: nothing.
        raise ValueError("partition_prefix and resource_buckets_only=True exclude each other")
    req.partition_prefix = pp
    req.resource_buckets_only = resource_buckets_only
    return req


def summary_request(resource: Any, prefix: Any, top: Any) -> quotas_pb2.GetSummaryRequest:
    return quotas_pb2.GetSummaryRequest(
        resource=check_name(resource, "resource"),
        partition_prefix=_check_prefix(prefix, "prefix"),
        top=check_int(top, "top", 1, MAX_TOP),
    )


def partitions_request(resource: Any, prefix: Any, order: Any, page_size: Any) -> quotas_pb2.ListPartitionsRequest:
    return quotas_pb2.ListPartitionsRequest(
        resource=check_name(resource, "resource"),
        partition_prefix=_check_prefix(prefix, "prefix"),
        order=check_order(order),
        page_size=check_int(page_size, "page_size", 1, MAX_PAGE_SIZE),
    )


def watch_summaries_request(
    prefix: Any, partition_prefix: Any, top: Any, min_interval: Any
) -> quotas_pb2.WatchSummariesRequest:
    req = quotas_pb2.WatchSummariesRequest(
        resource_prefix=_check_prefix(prefix, "prefix"),
        partition_prefix=_check_prefix(partition_prefix, "partition_prefix"),
        top=check_int(top, "top", 1, MAX_TOP),
    )
    iv = check_seconds(min_interval, "min_interval")
    if iv is not None:
        req.min_interval.CopyFrom(duration(iv))
    return req


@dataclasses.dataclass(frozen=True)
class Report:
    status: int
    headers: Dict[str, str]
    actual_cost: Dict[str, int]
    attempt: int
    answered_at: Optional[float] = None  # time.monotonic() when the answer arrived


def response_status(response: Any) -> int:
    """The HTTP status of a ``requests``/``httpx`` (``status_code``) or ``aiohttp`` /
    ``urllib`` (``status``) response."""
    for attr in ("status_code", "status"):
        v = getattr(response, attr, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return check_status(int(v), f"response.{attr}")
    raise TypeError(
        f"response must have an int status_code or status (requests, httpx, aiohttp), "
        f"not {type(response).__name__}"
    )


def response_headers(response: Any) -> Dict[str, str]:
    h = getattr(response, "headers", None)
    if h is None:
        return {}
    return check_headers(h, "response.headers")


def response_like(obj: Any) -> bool:
    """Whether ``obj`` looks like an HTTP response (has an int status and headers)."""
    if obj is None:
        return False
    try:
        response_status(obj)
    except (TypeError, ValueError):
        return False
    return hasattr(obj, "headers")


def response_of_exception(exc: BaseException) -> Any:
    """The response an HTTP error carries: ``requests.HTTPError.response``,
    ``httpx.HTTPStatusError.response``, or aiohttp's ``ClientResponseError`` itself
    (``status`` and ``headers``). None when it carries none."""
    r = getattr(exc, "response", None)
    if response_like(r):
        return r
    if response_like(exc):
        return exc
    return None


def report_args(
    response: Any,
    status: Any,
    headers: Any,
    actual_cost: Any,
    attempt: Any,
    answered_at: Any = None,
) -> Report:
    if response is None and status is None:
        raise TypeError("report() needs a response or status=")
    if answered_at is not None and (
        isinstance(answered_at, bool) or not isinstance(answered_at, (int, float)) or not math.isfinite(answered_at)
    ):
        raise TypeError("answered_at must be a time.monotonic() reading")
    st = check_status(status) if status is not None else response_status(response)
    hd = response_headers(response) if response is not None else {}
    if headers is not None:
        hd.update(check_headers(headers))
    return Report(
        status=st,
        headers=hd,
        actual_cost=check_cost(actual_cost, "actual_cost"),
        attempt=check_int(attempt, "attempt", 1, (1 << 32) - 1) if attempt is not None else 1,
        answered_at=float(answered_at) if answered_at is not None else None,
    )


#: The longest ``answered_ago`` the server takes (seconds).
MAX_ANSWERED_AGO = 3600.0


def report_request(permit_id: str, rep: Report) -> permits_pb2.ReportOutcomeRequest:
    req = permits_pb2.ReportOutcomeRequest(
        permit_id=permit_id,
        status_code=rep.status,
        headers=rep.headers,
        actual_cost=rep.actual_cost,
        attempt=rep.attempt,
    )
    if rep.answered_at is not None:
        # How long ago, as of sending: the server reads instant resets as of the answer.
        ago = min(max(time.monotonic() - rep.answered_at, 0.0), MAX_ANSWERED_AGO)
        req.answered_ago.FromNanoseconds(int(ago * 1e9))
    return req


def resource_message(
    name: Any,
    limits: Any,
    concurrency: Any,
    lease: Any,
    per_partition: Any,
    backoff: Any,
    max_queue: Any,
    learn_from_headers: Any,
    dimensions: Any,
    failure_policy: Any = None,
    limits_known: Any = None,
    probe_concurrency: Any = None,
    accept_feedback_without_permit: Any = None,
) -> resource_pb2.Resource:
    r = resource_pb2.Resource(name=check_name(name, "name"))
    if limits is None:
        limits = []
    if isinstance(limits, (str, bytes)) or not isinstance(limits, Iterable):
        raise TypeError("limits must be a list of Limit")
    for i, lim in enumerate(limits):
        if not isinstance(lim, Limit):
            raise TypeError(f"limits[{i}] must be a permitd.Limit, not {type(lim).__name__}")
        if not _DIMENSION_RE.match(lim.dimension if isinstance(lim.dimension, str) else ""):
            raise ValueError(f"limits[{i}].dimension {lim.dimension!r} is not a dimension name")
        pb = r.limits.add(
            dimension=lim.dimension,
            amount=check_int(lim.amount, f"limits[{i}].amount", 1, 10**12),
            burst=check_int(lim.burst, f"limits[{i}].burst", 0, _U64),
        )
        pb.period.CopyFrom(
            duration(check_seconds(lim.period, f"limits[{i}].period", allow_zero=False, optional=False) or 0)
        )
        if lim.scope is not None:
            scopes = {"resource": resource_pb2.LIMIT_SCOPE_RESOURCE, "partition": resource_pb2.LIMIT_SCOPE_PARTITION}
            if lim.scope not in scopes:
                raise ValueError(f"limits[{i}].scope must be 'resource' or 'partition', not {lim.scope!r}")
            pb.scope = scopes[lim.scope]
    r.concurrency = check_int(concurrency, "concurrency", 0, (1 << 32) - 1)
    ls = check_seconds(lease, "lease", allow_zero=False)
    if ls is not None:
        r.lease.CopyFrom(duration(ls))
    if not isinstance(per_partition, bool):
        raise TypeError("per_partition must be a bool")
    r.per_partition = per_partition
    if backoff is not None:
        if not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a permitd.Backoff, not {type(backoff).__name__}")
        kinds = {
            "exponential": resource_pb2.BACKOFF_KIND_EXPONENTIAL,
            "full_jitter": resource_pb2.BACKOFF_KIND_FULL_JITTER,
            "equal_jitter": resource_pb2.BACKOFF_KIND_EQUAL_JITTER,
            "decorrelated_jitter": resource_pb2.BACKOFF_KIND_DECORRELATED_JITTER,
        }
        if backoff.kind not in kinds:
            raise ValueError(f"backoff.kind must be one of {sorted(kinds)}, not {backoff.kind!r}")
        b = r.backoff
        b.kind = kinds[backoff.kind]
        for field in ("base", "max", "max_retry_after"):
            v = check_seconds(getattr(backoff, field), f"backoff.{field}")
            if v is not None:
                getattr(b, field).CopyFrom(duration(v))
        if isinstance(backoff.multiplier, bool) or not isinstance(backoff.multiplier, (int, float)):
            raise TypeError("backoff.multiplier must be a number")
        b.multiplier = float(backoff.multiplier)
        b.max_attempts = check_int(backoff.max_attempts, "backoff.max_attempts", 0, (1 << 32) - 1)
    r.max_queue = check_int(max_queue, "max_queue", 0, (1 << 32) - 1)
    if learn_from_headers is not None:
        if not isinstance(learn_from_headers, bool):
            raise TypeError("learn_from_headers must be a bool or None")
        r.learn_from_headers = learn_from_headers
    for d in dimensions or ():
        if not isinstance(d, str) or not _DIMENSION_RE.match(d):
            raise ValueError(f"dimensions: {d!r} is not a dimension name")
        r.dimensions.append(d)
    if failure_policy is not None:
        # Only meaningful on a cluster (replicas over Redis): what to do while Redis is down.
        policies = {
            "fail_closed": resource_pb2.FAILURE_POLICY_FAIL_CLOSED,
            "local_fallback": resource_pb2.FAILURE_POLICY_LOCAL_FALLBACK,
        }
        if failure_policy not in policies:
            raise ValueError(f"failure_policy must be 'fail_closed' or 'local_fallback', not {failure_policy!r}")
        r.failure_policy = policies[failure_policy]
    if limits_known is not None:
        # True: the limits are the upstream's real ones (no slow start, no adaptive rate).
        if not isinstance(limits_known, bool):
            raise TypeError("limits_known must be a bool or None")
        r.limits_known = limits_known
    if probe_concurrency is not None:
        r.probe_concurrency = check_int(probe_concurrency, "probe_concurrency", 0, 1000)
    if accept_feedback_without_permit is not None:
        # Whether workers may report outcomes without a permit (admins always may).
        if not isinstance(accept_feedback_without_permit, bool):
            raise TypeError("accept_feedback_without_permit must be a bool or None")
        r.accept_feedback_without_permit = accept_feedback_without_permit
    return r


# ---------------------------------------------------------------- stable hashing


def _canonical(obj: Any) -> Any:
    """A JSON-ready, order-independent form of ``obj``; TypeError for what has no stable
    form (no pickle: a key must not depend on memory addresses or class internals)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            return {"$float": repr(obj)}
        return obj
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(x) for x in obj]
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"cannot hash a mapping key of type {type(k).__name__}")
            out[json.dumps(k) if not isinstance(k, str) else k] = _canonical(v)
        return {"$map": out} if any(not isinstance(k, str) for k in obj) else out
    if isinstance(obj, (set, frozenset)):
        items = [_canonical(x) for x in obj]
        return {"$set": sorted(items, key=lambda x: json.dumps(x, sort_keys=True))}
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return {"$time": obj.isoformat()}
    if isinstance(obj, _dt.timedelta):
        return {"$timedelta": obj.total_seconds()}
    if isinstance(obj, decimal.Decimal):
        return {"$decimal": str(obj)}
    if isinstance(obj, uuid.UUID):
        return {"$uuid": str(obj)}
    if isinstance(obj, enum.Enum):
        return {"$enum": f"{type(obj).__qualname__}.{obj.name}"}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"$dataclass": type(obj).__qualname__, "fields": _canonical(dataclasses.asdict(obj))}
    raise TypeError(
        f"cannot hash a {type(obj).__name__} into a stable key: use JSON-like values "
        "(str, int, float, bool, None, bytes, list, tuple, dict, set, datetime, Decimal, "
        "UUID, Enum, dataclass)"
    )


def stable_hash(obj: Any) -> str:
    """SHA-256 (hex) of a canonical JSON form of ``obj``: equal values give equal hashes in
    every process and Python version; dict order does not matter. TypeError for values that
    have no stable form."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def call_key(name: str, sig: Optional[inspect.Signature], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
    """The cache key of one call: the function's name and its arguments bound to its
    signature (so ``f(1)``, ``f(x=1)`` and ``f(1, y=default)`` are the same call)."""
    if sig is not None:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}(): {e}") from None
        bound.apply_defaults()
        arguments: Any = dict(bound.arguments)
    else:
        arguments = {"args": list(args), "kwargs": kwargs}
    return stable_hash({"fn": name, "arguments": arguments})


def fingerprint_of(value: Any) -> str:
    """An idempotency fingerprint: a str is used as given, anything else is hashed."""
    if value is None:
        return ""
    if isinstance(value, str):
        if len(value.encode()) > MAX_FINGERPRINT_BYTES:
            raise ValueError(f"fingerprint is {len(value.encode())} bytes, at most {MAX_FINGERPRINT_BYTES}")
        return value
    return stable_hash(value)


def json_encode(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(f"cached value is not JSON-serialisable (pass encode=/decode=): {e}") from None


def json_decode(data: bytes) -> Any:
    return json.loads(data)


Codec = Tuple[Callable[[Any], bytes], Callable[[bytes], Any]]


def body_of(response: Any) -> bytes:
    """The body of a ``requests``/``httpx`` response (``content``), or of an ``aiohttp``
    response that has been read; b"" when unknown."""
    c = getattr(response, "content", None)
    if isinstance(c, (bytes, bytearray)):
        return bytes(c)
    b = getattr(response, "_body", None)  # aiohttp, after read()/text()/json()
    if isinstance(b, (bytes, bytearray)):
        return bytes(b)
    return b""


def stored_result_message(
    response: Any, status: Any, headers: Any, body: Any, metadata: Any, body_default: bytes
) -> idempotency_pb2.StoredResult:
    st = check_status(status) if status is not None else (response_status(response) if response is not None else 0)
    hd = response_headers(response) if response is not None else {}
    if headers is not None:
        hd.update(check_headers(headers))
    if body is None:
        data = body_default
    elif isinstance(body, str):
        data = body.encode()
    elif isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    else:
        raise TypeError(f"body must be bytes or str, not {type(body).__name__}")
    md: Dict[str, str] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError("metadata must be a mapping of str to str")
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata must be a mapping of str to str")
            md[k] = v
    return idempotency_pb2.StoredResult(status_code=st, headers=hd, body=data, metadata=md)


def is_failure(status: int) -> bool:
    return status == 0 or status >= 400

