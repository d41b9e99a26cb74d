import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailurePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_POLICY_UNSPECIFIED: _ClassVar[FailurePolicy]
    FAILURE_POLICY_FAIL_CLOSED: _ClassVar[FailurePolicy]
    FAILURE_POLICY_LOCAL_FALLBACK: _ClassVar[FailurePolicy]

class LimitScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_SCOPE_UNSPECIFIED: _ClassVar[LimitScope]
    LIMIT_SCOPE_RESOURCE: _ClassVar[LimitScope]
    LIMIT_SCOPE_PARTITION: _ClassVar[LimitScope]

class BackoffKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKOFF_KIND_UNSPECIFIED: _ClassVar[BackoffKind]
    BACKOFF_KIND_EXPONENTIAL: _ClassVar[BackoffKind]
    BACKOFF_KIND_FULL_JITTER: _ClassVar[BackoffKind]
    BACKOFF_KIND_EQUAL_JITTER: _ClassVar[BackoffKind]
    BACKOFF_KIND_DECORRELATED_JITTER: _ClassVar[BackoffKind]
FAILURE_POLICY_UNSPECIFIED: FailurePolicy
FAILURE_POLICY_FAIL_CLOSED: FailurePolicy
FAILURE_POLICY_LOCAL_FALLBACK: FailurePolicy
LIMIT_SCOPE_UNSPECIFIED: LimitScope
LIMIT_SCOPE_RESOURCE: LimitScope
LIMIT_SCOPE_PARTITION: LimitScope
BACKOFF_KIND_UNSPECIFIED: BackoffKind
BACKOFF_KIND_EXPONENTIAL: BackoffKind
BACKOFF_KIND_FULL_JITTER: BackoffKind
BACKOFF_KIND_EQUAL_JITTER: BackoffKind
BACKOFF_KIND_DECORRELATED_JITTER: BackoffKind

class Resource(_message.Message):
    __slots__ = ("name", "limits", "concurrency", "lease", "per_partition", "backoff", "max_queue", "learn_from_headers", "dimensions", "failure_policy", "limits_known", "probe_concurrency", "accept_feedback_without_permit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    PER_PARTITION_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    LEARN_FROM_HEADERS_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_POLICY_FIELD_NUMBER: _ClassVar[int]
    LIMITS_KNOWN_FIELD_NUMBER: _ClassVar[int]
    PROBE_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FEEDBACK_WITHOUT_PERMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    limits: _containers.RepeatedCompositeFieldContainer[Limit]
    concurrency: int
    lease: _duration_pb2.Duration
    per_partition: bool
    backoff: BackoffPolicy
    max_queue: int
    learn_from_headers: bool
    dimensions: _containers.RepeatedScalarFieldContainer[str]
    failure_policy: FailurePolicy
    limits_known: bool
    probe_concurrency: int
    accept_feedback_without_permit: bool
    def __init__(self, name: _Optional[str] = ..., limits: _Optional[_Iterable[_Union[Limit, _Mapping]]] = ..., concurrency: _Optional[int] = ..., lease: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., per_partition: bool = ..., backoff: _Optional[_Union[BackoffPolicy, _Mapping]] = ..., max_queue: _Optional[int] = ..., learn_from_headers: bool = ..., dimensions: _Optional[_Iterable[str]] = ..., failure_policy: _Optional[_Union[FailurePolicy, str]] = ..., limits_known: bool = ..., probe_concurrency: _Optional[int] = ..., accept_feedback_without_permit: bool = ...) -> None: ...

class Limit(_message.Message):
    __slots__ = ("dimension", "amount", "period", "burst", "scope")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    dimension: str
    amount: int
    period: _duration_pb2.Duration
    burst: int
    scope: LimitScope
    def __init__(self, dimension: _Optional[str] = ..., amount: _Optional[int] = ..., period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., burst: _Optional[int] = ..., scope: _Optional[_Union[LimitScope, str]] = ...) -> None: ...

class BackoffPolicy(_message.Message):
    __slots__ = ("kind", "base", "max", "multiplier", "max_attempts", "max_retry_after")
    KIND_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    kind: BackoffKind
    base: _duration_pb2.Duration
    max: _duration_pb2.Duration
    multiplier: float
    max_attempts: int
    max_retry_after: _duration_pb2.Duration
    def __init__(self, kind: _Optional[_Union[BackoffKind, str]] = ..., base: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., multiplier: _Optional[float] = ..., max_attempts: _Optional[int] = ..., max_retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
