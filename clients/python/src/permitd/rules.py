"""Rules that map an HTTP request to a permit: which resource, partition and cost, and how
the real cost is read back from the answer. Shared by :mod:`permitd.httpx`,
:mod:`permitd.requests` and the presets (:mod:`permitd.presets`); no I/O here.

A rule matches on host, path and method; the first matching rule of a list wins, and a
request no rule matches goes straight through, without a permit::

    rules = [permitd.rules.Rule("github:rest", host="api.github.com")]
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Sequence, Union
from urllib.parse import urlsplit

from . import _core as core

__all__ = ["Request", "Rule", "Route", "StreamUsage", "route"]


@dataclasses.dataclass
class Request:
    """What a rule sees of a request: method (upper case), host (lower case, no port), path,
    headers (lower-case names) and the body (bytes; ``json()`` parses it, None if not JSON)."""

    method: str
    host: str
    path: str
    headers: Dict[str, str]
    body: bytes = b""
    _json: Any = dataclasses.field(default=None, repr=False)
    _parsed: bool = dataclasses.field(default=False, repr=False)

    @classmethod
    def of(cls, method: str, url: str, headers: Mapping[str, str], body: bytes) -> "Request":
        u = urlsplit(url)
        return cls(
            method=method.upper(),
            host=(u.hostname or "").lower(),
            path=u.path or "/",
            headers={str(k).lower(): str(v) for k, v in headers.items()},
            body=body,
        )

    def json(self) -> Any:
        if not self._parsed:
            self._parsed = True
            try:
                self._json = json.loads(self.body) if self.body else None
            except (ValueError, UnicodeDecodeError):
                self._json = None
        return self._json


#: Reads the real cost from an answer's parsed JSON body; None when it says nothing.
Usage = Callable[[Any], Optional[Mapping[str, int]]]
Value = Union[str, Callable[[Request], Optional[str]]]
Cost = Union[None, Mapping[str, int], Callable[[Request], Optional[Mapping[str, int]]]]


class StreamUsage:
    """Collects the real cost from a server-sent-events answer, one ``data:`` event at a time
    (OpenAI's final usage chunk, Anthropic's ``message_start`` and ``message_delta``)."""

    def __init__(self, on_event: Callable[[Any, Dict[str, int]], None]) -> None:
        self._on_event = on_event
        self._buf = b""
        self.cost: Dict[str, int] = {}

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        # Read whole lines only; the unfinished last one waits for the next chunk.
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if not data or data == b"[DONE]":
                continue
            try:
                event = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                continue
            try:
                self._on_event(event, self.cost)
            except (TypeError, ValueError, KeyError, AttributeError):
                continue  # an event of another shape says nothing about the cost


@dataclasses.dataclass(frozen=True)
class Rule:
    """Requests to ``host`` (exact, or a glob such as ``*.openai.azure.com``; None = any)
    whose path starts with ``path`` (or matches it, when it starts with ``^``) and whose
    method is in ``methods`` (None = any) take a permit of ``resource``.

    ``resource`` and ``partition`` are strings or functions of the :class:`Request` (a
    resource function returning None lets the request through without a permit). ``cost``
    is a mapping, or a function of the request (``{"tokens": 1200}``; ``requests`` counts 1
    unless given). ``usage`` reads the real cost from the answer's JSON body, and
    ``stream_usage`` from each event of a streamed answer, so the reservation is corrected
    both ways when the answer is reported. ``max_wait`` and ``priority`` are the permit's.
    """

    resource: Value
    host: Optional[str] = None
    path: Optional[str] = None
    methods: Optional[Collection[str]] = None
    partition: Value = ""
    cost: Cost = None
    usage: Optional[Usage] = None
    stream_usage: Optional[Callable[[Any, Dict[str, int]], None]] = None
    max_wait: Optional[float] = 60.0
    priority: int = 0
    _path_re: Optional["re.Pattern[str]"] = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.resource, str) or callable(self.resource)):
            raise TypeError("resource must be a str or a function of the request")
        if isinstance(self.resource, str):
            core.check_name(self.resource, "resource")
        if self.path is not None and self.path.startswith("^"):
            object.__setattr__(self, "_path_re", re.compile(self.path))
        if self.methods is not None:
            object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        core.check_seconds(self.max_wait, "max_wait")
        core.check_int(self.priority, "priority", -(1 << 31), (1 << 31) - 1)

    def matches(self, req: Request) -> bool:
        if self.methods is not None and req.method not in self.methods:
            return False
        if self.host is not None and not fnmatch.fnmatchcase(req.host, self.host.lower()):
            return False
        if self.path is not None:
            if self._path_re is not None:
                return self._path_re.search(req.path) is not None
            return req.path.startswith(self.path)
        return True


@dataclasses.dataclass
class Route:
    """A matched request: the permit to ask for, and how to read the real cost back."""

    resource: str
    partition: str
    cost: Dict[str, int]
    max_wait: Optional[float]
    priority: int
    usage: Optional[Usage]
    stream_usage: Optional[Callable[[Any, Dict[str, int]], None]]

    def actual_cost(self, content_type: str, body: bytes) -> Optional[Dict[str, int]]:
        """The real cost read from a whole JSON answer, None when unknown."""
        if self.usage is None or "json" not in content_type or not body:
            return None
        try:
            got = self.usage(json.loads(body))
        except (ValueError, UnicodeDecodeError, TypeError, KeyError, AttributeError):
            return None
        return _clean(got)

    def streamed(self, content_type: str) -> Optional[StreamUsage]:
        if self.stream_usage is None or "text/event-stream" not in content_type:
            return None
        return StreamUsage(self.stream_usage)


def _clean(cost: Optional[Mapping[str, Any]]) -> Optional[Dict[str, int]]:
    if not cost:
        return None
    out = {k: int(v) for k, v in cost.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0}
    return out or None


def _value(v: Value, req: Request, field: str) -> Optional[str]:
    got = v(req) if callable(v) else v
    if got is None:
        return None
    if not isinstance(got, str):
        raise TypeError(f"rule {field} must give a str, not {type(got).__name__}")
    return got


def route(rules: Sequence[Rule], req: Request) -> Optional[Route]:
    """The route of the first rule matching ``req``, None when none does (or its resource
    function declines)."""
    for rule in rules:
        if not rule.matches(req):
            continue
        resource = _value(rule.resource, req, "resource")
        if not resource:
            return None
        partition = _value(rule.partition, req, "partition") or ""
        cost = rule.cost(req) if callable(rule.cost) else rule.cost
        return Route(
            resource=resource,
            partition=partition,
            cost=core.check_cost(cost, "cost"),
            max_wait=rule.max_wait,
            priority=rule.priority,
            usage=rule.usage,
            stream_usage=rule.stream_usage,
        )
    return None


def check_rules(rules: Any) -> List[Rule]:
    if isinstance(rules, Rule):
        return [rules]
    out = list(rules)
    for r in out:
        if not isinstance(r, Rule):
            raise TypeError(f"rules must be permitd.rules.Rule, not {type(r).__name__}")
    if not out:
        raise ValueError("rules must not be empty")
    return out
