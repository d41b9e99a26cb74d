import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DenialReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DENIAL_REASON_UNSPECIFIED: _ClassVar[DenialReason]
    DENIAL_REASON_RATE_LIMITED: _ClassVar[DenialReason]
    DENIAL_REASON_CONCURRENCY_LIMITED: _ClassVar[DenialReason]
    DENIAL_REASON_COOLDOWN: _ClassVar[DenialReason]
    DENIAL_REASON_QUEUE_TIMEOUT: _ClassVar[DenialReason]
    DENIAL_REASON_QUEUE_FULL: _ClassVar[DenialReason]
DENIAL_REASON_UNSPECIFIED: DenialReason
DENIAL_REASON_RATE_LIMITED: DenialReason
DENIAL_REASON_CONCURRENCY_LIMITED: DenialReason
DENIAL_REASON_COOLDOWN: DenialReason
DENIAL_REASON_QUEUE_TIMEOUT: DenialReason
DENIAL_REASON_QUEUE_FULL: DenialReason

class AcquirePermitRequest(_message.Message):
    __slots__ = ("resource", "partition", "cost", "max_wait", "priority", "client_id", "lease")
    class CostEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    resource: str
    partition: str
    cost: _containers.ScalarMap[str, int]
    max_wait: _duration_pb2.Duration
    priority: int
    client_id: str
    lease: _duration_pb2.Duration
    def __init__(self, resource: _Optional[str] = ..., partition: _Optional[str] = ..., cost: _Optional[_Mapping[str, int]] = ..., max_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., priority: _Optional[int] = ..., client_id: _Optional[str] = ..., lease: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class AcquirePermitResponse(_message.Message):
    __slots__ = ("granted", "permit_id", "retry_after", "denial_reason", "lease_expires_at", "waited", "remaining")
    class RemainingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    PERMIT_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    DENIAL_REASON_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    WAITED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    permit_id: str
    retry_after: _duration_pb2.Duration
    denial_reason: DenialReason
    lease_expires_at: _timestamp_pb2.Timestamp
    waited: _duration_pb2.Duration
    remaining: _containers.ScalarMap[str, int]
    def __init__(self, granted: bool = ..., permit_id: _Optional[str] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., denial_reason: _Optional[_Union[DenialReason, str]] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., waited: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., remaining: _Optional[_Mapping[str, int]] = ...) -> None: ...

class AcquirePermitsRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AcquirePermitRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[AcquirePermitRequest, _Mapping]]] = ...) -> None: ...

class AcquirePermitsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AcquirePermitResult]
    def __init__(self, results: _Optional[_Iterable[_Union[AcquirePermitResult, _Mapping]]] = ...) -> None: ...

class AcquirePermitResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: AcquirePermitResponse
    error: PermitItemError
    def __init__(self, response: _Optional[_Union[AcquirePermitResponse, _Mapping]] = ..., error: _Optional[_Union[PermitItemError, _Mapping]] = ...) -> None: ...

class PermitItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("permit_id", "resource", "partition", "status_code", "headers", "actual_cost", "attempt", "answered_ago")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ActualCostEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PERMIT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_COST_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AGO_FIELD_NUMBER: _ClassVar[int]
    permit_id: str
    resource: str
    partition: str
    status_code: int
    headers: _containers.ScalarMap[str, str]
    actual_cost: _containers.ScalarMap[str, int]
    attempt: int
    answered_ago: _duration_pb2.Duration
    def __init__(self, permit_id: _Optional[str] = ..., resource: _Optional[str] = ..., partition: _Optional[str] = ..., status_code: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ..., actual_cost: _Optional[_Mapping[str, int]] = ..., attempt: _Optional[int] = ..., answered_ago: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LearnedLimit(_message.Message):
    __slots__ = ("dimension", "limit", "remaining", "reset_at", "source")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    dimension: str
    limit: int
    remaining: int
    reset_at: _timestamp_pb2.Timestamp
    source: str
    def __init__(self, dimension: _Optional[str] = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("retry", "retry_after", "cooldown_until", "learned")
    RETRY_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    LEARNED_FIELD_NUMBER: _ClassVar[int]
    retry: bool
    retry_after: _duration_pb2.Duration
    cooldown_until: _timestamp_pb2.Timestamp
    learned: _containers.RepeatedCompositeFieldContainer[LearnedLimit]
    def __init__(self, retry: bool = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cooldown_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., learned: _Optional[_Iterable[_Union[LearnedLimit, _Mapping]]] = ...) -> None: ...

class ReleasePermitRequest(_message.Message):
    __slots__ = ("permit_id", "refund")
    PERMIT_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_FIELD_NUMBER: _ClassVar[int]
    permit_id: str
    refund: bool
    def __init__(self, permit_id: _Optional[str] = ..., refund: bool = ...) -> None: ...

class ReleasePermitResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ComputeBackoffRequest(_message.Message):
    __slots__ = ("resource", "attempt", "status_code", "headers", "partition")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    resource: str
    attempt: int
    status_code: int
    headers: _containers.ScalarMap[str, str]
    partition: str
    def __init__(self, resource: _Optional[str] = ..., attempt: _Optional[int] = ..., status_code: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ..., partition: _Optional[str] = ...) -> None: ...

class ComputeBackoffResponse(_message.Message):
    __slots__ = ("retry", "retry_after", "give_up")
    RETRY_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    GIVE_UP_FIELD_NUMBER: _ClassVar[int]
    retry: bool
    retry_after: _duration_pb2.Duration
    give_up: bool
    def __init__(self, retry: bool = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., give_up: bool = ...) -> None: ...
