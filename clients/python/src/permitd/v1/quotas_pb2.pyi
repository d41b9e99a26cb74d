import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from permitd.v1 import resource_pb2 as _resource_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LimitSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_SOURCE_UNSPECIFIED: _ClassVar[LimitSource]
    LIMIT_SOURCE_CONFIG: _ClassVar[LimitSource]
    LIMIT_SOURCE_LEARNED: _ClassVar[LimitSource]
    LIMIT_SOURCE_ADAPTIVE: _ClassVar[LimitSource]

class PartitionOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTITION_ORDER_UNSPECIFIED: _ClassVar[PartitionOrder]
    PARTITION_ORDER_NAME: _ClassVar[PartitionOrder]
    PARTITION_ORDER_PRESSURE: _ClassVar[PartitionOrder]
LIMIT_SOURCE_UNSPECIFIED: LimitSource
LIMIT_SOURCE_CONFIG: LimitSource
LIMIT_SOURCE_LEARNED: LimitSource
LIMIT_SOURCE_ADAPTIVE: LimitSource
PARTITION_ORDER_UNSPECIFIED: PartitionOrder
PARTITION_ORDER_NAME: PartitionOrder
PARTITION_ORDER_PRESSURE: PartitionOrder

class WatchRequest(_message.Message):
    __slots__ = ("resource_prefix", "min_interval", "partition_prefix", "resource_buckets_only")
    RESOURCE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PARTITION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_BUCKETS_ONLY_FIELD_NUMBER: _ClassVar[int]
    resource_prefix: str
    min_interval: _duration_pb2.Duration
    partition_prefix: str
    resource_buckets_only: bool
    def __init__(self, resource_prefix: _Optional[str] = ..., min_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., partition_prefix: _Optional[str] = ..., resource_buckets_only: bool = ...) -> None: ...

class DimensionQuota(_message.Message):
    __slots__ = ("dimension", "limit", "remaining", "reset_at", "source", "period", "reason", "rate_per_second")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    dimension: str
    limit: int
    remaining: int
    reset_at: _timestamp_pb2.Timestamp
    source: LimitSource
    period: _duration_pb2.Duration
    reason: str
    rate_per_second: float
    def __init__(self, dimension: _Optional[str] = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[_Union[LimitSource, str]] = ..., period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ..., rate_per_second: _Optional[float] = ...) -> None: ...

class QuotaUpdate(_message.Message):
    __slots__ = ("resource", "partition", "dimensions", "in_flight", "concurrency", "queue_depth", "cooldown_until", "granted_total", "denied_total", "upstream_429_total", "at", "probing", "cooldown_reason")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DENIED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_429_TOTAL_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    PROBING_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_REASON_FIELD_NUMBER: _ClassVar[int]
    resource: str
    partition: str
    dimensions: _containers.RepeatedCompositeFieldContainer[DimensionQuota]
    in_flight: int
    concurrency: int
    queue_depth: int
    cooldown_until: _timestamp_pb2.Timestamp
    granted_total: int
    denied_total: int
    upstream_429_total: int
    at: _timestamp_pb2.Timestamp
    probing: bool
    cooldown_reason: str
    def __init__(self, resource: _Optional[str] = ..., partition: _Optional[str] = ..., dimensions: _Optional[_Iterable[_Union[DimensionQuota, _Mapping]]] = ..., in_flight: _Optional[int] = ..., concurrency: _Optional[int] = ..., queue_depth: _Optional[int] = ..., cooldown_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., granted_total: _Optional[int] = ..., denied_total: _Optional[int] = ..., upstream_429_total: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., probing: bool = ..., cooldown_reason: _Optional[str] = ...) -> None: ...

class GetQuotaRequest(_message.Message):
    __slots__ = ("resource", "partition")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    resource: str
    partition: str
    def __init__(self, resource: _Optional[str] = ..., partition: _Optional[str] = ...) -> None: ...

class ListResourcesRequest(_message.Message):
    __slots__ = ("prefix", "page_size", "page_token")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    page_size: int
    page_token: str
    def __init__(self, prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListResourcesResponse(_message.Message):
    __slots__ = ("resources", "next_page_token")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[_resource_pb2.Resource]
    next_page_token: str
    def __init__(self, resources: _Optional[_Iterable[_Union[_resource_pb2.Resource, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PutResourceRequest(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: _resource_pb2.Resource
    def __init__(self, resource: _Optional[_Union[_resource_pb2.Resource, _Mapping]] = ...) -> None: ...

class PutResourceResponse(_message.Message):
    __slots__ = ("resource", "replaced")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    resource: _resource_pb2.Resource
    replaced: bool
    def __init__(self, resource: _Optional[_Union[_resource_pb2.Resource, _Mapping]] = ..., replaced: bool = ...) -> None: ...

class DeleteResourceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteResourceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetResourceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResetResourceResponse(_message.Message):
    __slots__ = ("buckets",)
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    buckets: int
    def __init__(self, buckets: _Optional[int] = ...) -> None: ...

class GetSummaryRequest(_message.Message):
    __slots__ = ("resource", "partition_prefix", "top")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    resource: str
    partition_prefix: str
    top: int
    def __init__(self, resource: _Optional[str] = ..., partition_prefix: _Optional[str] = ..., top: _Optional[int] = ...) -> None: ...

class WatchSummariesRequest(_message.Message):
    __slots__ = ("resource_prefix", "partition_prefix", "top", "min_interval")
    RESOURCE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PARTITION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    resource_prefix: str
    partition_prefix: str
    top: int
    min_interval: _duration_pb2.Duration
    def __init__(self, resource_prefix: _Optional[str] = ..., partition_prefix: _Optional[str] = ..., top: _Optional[int] = ..., min_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ResourceSummary(_message.Message):
    __slots__ = ("resource", "resource_bucket", "per_partition", "live_partitions", "in_flight", "queue_depth", "near_empty", "near_empty_share", "cooling_down", "probing", "granted_total", "denied_total", "upstream_429_total", "granted_per_second", "denied_per_second", "rate_window", "top", "at", "version")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_BUCKET_FIELD_NUMBER: _ClassVar[int]
    PER_PARTITION_FIELD_NUMBER: _ClassVar[int]
    LIVE_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    NEAR_EMPTY_FIELD_NUMBER: _ClassVar[int]
    NEAR_EMPTY_SHARE_FIELD_NUMBER: _ClassVar[int]
    COOLING_DOWN_FIELD_NUMBER: _ClassVar[int]
    PROBING_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DENIED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_429_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GRANTED_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DENIED_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RATE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    resource: str
    resource_bucket: QuotaUpdate
    per_partition: bool
    live_partitions: int
    in_flight: int
    queue_depth: int
    near_empty: int
    near_empty_share: float
    cooling_down: int
    probing: int
    granted_total: int
    denied_total: int
    upstream_429_total: int
    granted_per_second: float
    denied_per_second: float
    rate_window: _duration_pb2.Duration
    top: _containers.RepeatedCompositeFieldContainer[QuotaUpdate]
    at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, resource: _Optional[str] = ..., resource_bucket: _Optional[_Union[QuotaUpdate, _Mapping]] = ..., per_partition: bool = ..., live_partitions: _Optional[int] = ..., in_flight: _Optional[int] = ..., queue_depth: _Optional[int] = ..., near_empty: _Optional[int] = ..., near_empty_share: _Optional[float] = ..., cooling_down: _Optional[int] = ..., probing: _Optional[int] = ..., granted_total: _Optional[int] = ..., denied_total: _Optional[int] = ..., upstream_429_total: _Optional[int] = ..., granted_per_second: _Optional[float] = ..., denied_per_second: _Optional[float] = ..., rate_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., top: _Optional[_Iterable[_Union[QuotaUpdate, _Mapping]]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ListPartitionsRequest(_message.Message):
    __slots__ = ("resource", "partition_prefix", "order", "page_size", "page_token")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resource: str
    partition_prefix: str
    order: PartitionOrder
    page_size: int
    page_token: str
    def __init__(self, resource: _Optional[str] = ..., partition_prefix: _Optional[str] = ..., order: _Optional[_Union[PartitionOrder, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPartitionsResponse(_message.Message):
    __slots__ = ("partitions", "next_page_token", "total")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[QuotaUpdate]
    next_page_token: str
    total: int
    def __init__(self, partitions: _Optional[_Iterable[_Union[QuotaUpdate, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...
