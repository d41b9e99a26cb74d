import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdempotencyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDEMPOTENCY_STATE_UNSPECIFIED: _ClassVar[IdempotencyState]
    IDEMPOTENCY_STATE_ACQUIRED: _ClassVar[IdempotencyState]
    IDEMPOTENCY_STATE_IN_PROGRESS: _ClassVar[IdempotencyState]
    IDEMPOTENCY_STATE_COMPLETED: _ClassVar[IdempotencyState]
    IDEMPOTENCY_STATE_FINGERPRINT_MISMATCH: _ClassVar[IdempotencyState]
IDEMPOTENCY_STATE_UNSPECIFIED: IdempotencyState
IDEMPOTENCY_STATE_ACQUIRED: IdempotencyState
IDEMPOTENCY_STATE_IN_PROGRESS: IdempotencyState
IDEMPOTENCY_STATE_COMPLETED: IdempotencyState
IDEMPOTENCY_STATE_FINGERPRINT_MISMATCH: IdempotencyState

class StoredResult(_message.Message):
    __slots__ = ("status_code", "headers", "body", "metadata")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    status_code: int
    headers: _containers.ScalarMap[str, str]
    body: bytes
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, status_code: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ..., body: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BeginRequest(_message.Message):
    __slots__ = ("key", "fingerprint", "ttl", "lock_ttl")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    LOCK_TTL_FIELD_NUMBER: _ClassVar[int]
    key: str
    fingerprint: str
    ttl: _duration_pb2.Duration
    lock_ttl: _duration_pb2.Duration
    def __init__(self, key: _Optional[str] = ..., fingerprint: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lock_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class BeginResponse(_message.Message):
    __slots__ = ("state", "result", "retry_after", "lock_expires_at", "lock_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    LOCK_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LOCK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: IdempotencyState
    result: StoredResult
    retry_after: _duration_pb2.Duration
    lock_expires_at: _timestamp_pb2.Timestamp
    lock_token: str
    def __init__(self, state: _Optional[_Union[IdempotencyState, str]] = ..., result: _Optional[_Union[StoredResult, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lock_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lock_token: _Optional[str] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("key", "result", "lock_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    LOCK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    result: StoredResult
    lock_token: str
    def __init__(self, key: _Optional[str] = ..., result: _Optional[_Union[StoredResult, _Mapping]] = ..., lock_token: _Optional[str] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AbandonRequest(_message.Message):
    __slots__ = ("key", "lock_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LOCK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    lock_token: str
    def __init__(self, key: _Optional[str] = ..., lock_token: _Optional[str] = ...) -> None: ...

class AbandonResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("state", "result", "expires_at", "lock_expires_at", "fingerprint")
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LOCK_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    state: IdempotencyState
    result: StoredResult
    expires_at: _timestamp_pb2.Timestamp
    lock_expires_at: _timestamp_pb2.Timestamp
    fingerprint: str
    def __init__(self, state: _Optional[_Union[IdempotencyState, str]] = ..., result: _Optional[_Union[StoredResult, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lock_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class IdempotencyStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IdempotencyStatsResponse(_message.Message):
    __slots__ = ("acquired", "in_progress", "replayed", "fingerprint_mismatches", "completed", "abandoned", "expired_removed", "corrupt_values")
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_REMOVED_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_VALUES_FIELD_NUMBER: _ClassVar[int]
    acquired: int
    in_progress: int
    replayed: int
    fingerprint_mismatches: int
    completed: int
    abandoned: int
    expired_removed: int
    corrupt_values: int
    def __init__(self, acquired: _Optional[int] = ..., in_progress: _Optional[int] = ..., replayed: _Optional[int] = ..., fingerprint_mismatches: _Optional[int] = ..., completed: _Optional[int] = ..., abandoned: _Optional[int] = ..., expired_removed: _Optional[int] = ..., corrupt_values: _Optional[int] = ...) -> None: ...
