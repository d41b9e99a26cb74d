"""Rules and presets, without I/O: routing, cost estimates, usage read back (whole answers
and server-sent events cut at any byte)."""

from __future__ import annotations

import json

import pytest

from permitd import presets
from permitd.rules import Request, Rule, route

from .llm_upstream import anthropic_events, openai_events


def req(path: str, body: object, method: str = "POST", host: str = "api.openai.com") -> Request:
    return Request.of(method, f"https://{host}{path}", {"Content-Type": "application/json"}, json.dumps(body).encode())


def test_openai_cost_and_resource() -> None:
    rules = presets.openai(tokenizer=lambda t: len(t.split()))
    r = route(rules, req("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "a b c"}], "max_completion_tokens": 50, "n": 2}))
    assert r is not None and r.resource == "openai:gpt-4o"
    assert r.cost == {"tokens": 3 + 4 + 2 * 50}
    e = route(rules, req("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["x y", "z"]}))
    assert e is not None and e.cost == {"tokens": 3}
    # Azure-style and other OpenAI-compatible paths; GETs and other paths go through.
    assert route(rules, req("/chat/completions", {"model": "m"})) is not None
    assert route(rules, req("/v1/models", {}, method="GET")) is None
    assert route(rules, req("/v1/files", {"model": "m"})) is None
    # No model: still a permit, of a resource that says so; odd characters are replaced.
    assert route(rules, req("/v1/responses", {"input": "hi"})).resource == "openai:unknown"  # type: ignore[union-attr]
    assert route(rules, req("/v1/responses", {"model": "a b*c"})).resource == "openai:a-b-c"  # type: ignore[union-attr]


def test_anthropic_cost_and_usage() -> None:
    rules = presets.anthropic(tokenizer=lambda t: len(t.split()))
    r = route(rules, req("/v1/messages", {"model": "claude-x", "system": "be brief", "max_tokens": 100, "messages": [{"role": "user", "content": [{"type": "text", "text": "one two"}]}]}, host="api.anthropic.com"))
    assert r is not None and r.resource == "anthropic:claude-x"
    assert r.cost == {"input_tokens": 2 + 2 + 4, "output_tokens": 100, "tokens": 108}
    got = r.actual_cost("application/json", json.dumps({"usage": {"input_tokens": 5, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 50, "output_tokens": 7}}).encode())
    assert got == {"input_tokens": 8, "output_tokens": 7, "tokens": 15}
    assert r.actual_cost("text/html", b"<html>") is None


@pytest.mark.parametrize("step", [1, 3, 17, 10_000])
def test_stream_usage_survives_any_chunking(step: int) -> None:
    o = route(presets.openai(), req("/v1/chat/completions", {"model": "m", "stream": True}))
    assert o is not None
    s = o.streamed("text/event-stream; charset=utf-8")
    assert s is not None
    data = b"".join(openai_events("m", 5, {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}))
    for i in range(0, len(data), step):
        s.feed(data[i : i + step])
    assert s.cost == {"tokens": 16}

    a = route(presets.anthropic(), req("/v1/messages", {"model": "m", "max_tokens": 9}))
    assert a is not None
    s = a.streamed("text/event-stream")
    assert s is not None
    data = b"".join(anthropic_events("m", 12, 9)).replace(b"\n", b"\r\n")
    for i in range(0, len(data), step):
        s.feed(data[i : i + step])
    assert s.cost == {"input_tokens": 12, "output_tokens": 9, "tokens": 21}


def test_rule_validation() -> None:
    with pytest.raises(ValueError):
        Rule("bad name!")
    with pytest.raises(TypeError):
        Rule(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Rule("ok", max_wait=-1)
    rule = Rule("gh", host="*.github.com", path="^/repos/[^/]+/[^/]+/issues$", methods=["post"])
    assert rule.matches(req("/repos/a/b/issues", {}, host="api.github.com"))
    assert not rule.matches(req("/repos/a/b/issues", {}, method="GET", host="api.github.com"))
    assert not rule.matches(req("/repos/a/b/pulls", {}, host="api.github.com"))
    assert not rule.matches(req("/repos/a/b/issues", {}, host="example.com"))
