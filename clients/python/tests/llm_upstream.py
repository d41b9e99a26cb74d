"""A local OpenAI- and Anthropic-compatible upstream for the drop-in tests (standard library
only): ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic), plain
or streamed, enforcing requests and tokens per model with token buckets and answering with
each API's real rate-limit headers, usage and 429s.

The buckets are what the real APIs document: a limit refills continuously and the headers
state the capacity, what is left (the hidden ``slack`` not shown) and when the bucket is
whole again (OpenAI: a Go duration; Anthropic: an RFC 3339 time). A request needs its
prompt plus its ``max_tokens`` to be admitted (as OpenAI counts it) and is charged what it
really used. The upstream counts prompt tokens its own way (1.3 per word plus 3 per
message), not as the client estimates them, so reconciliation has something to correct.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Tuple


class Bucket:
    def __init__(self, rate: float, burst: int, slack: float) -> None:
        self.rate, self.burst, self.slack = rate, burst, slack
        self.level, self.at = float(burst) + slack, time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.burst + self.slack, self.level + (now - self.at) * self.rate)
        self.at = now

    def shown(self) -> float:
        return min(max(self.level - self.slack, 0.0), float(self.burst))

    def until_full(self) -> float:
        return (self.burst - self.shown()) / self.rate

    def until(self, n: float) -> float:
        return max(0.0, (n - self.level) / self.rate)


@dataclass
class Shape:
    """Per model: requests and tokens as (units per second, burst). For Anthropic the token
    limit applies to input and output tokens each (its ITPM and OTPM)."""

    requests: Tuple[float, int]
    tokens: Tuple[float, int]
    retry_after: bool = True  # send Retry-After on a 429 (some compatible servers don't)


@dataclass
class Served:
    api: str
    model: str
    at: float
    status: int
    retry_count: int
    usage: Dict[str, int]


@dataclass
class Model:
    shape: Shape
    buckets: Dict[str, Bucket] = field(default_factory=dict)


def prompt_tokens(texts: List[str], messages: int) -> int:
    return math.ceil(sum(len(t.split()) for t in texts) * 1.3) + 3 * messages


def completion_tokens(seed: bytes, max_tokens: int) -> int:
    """Deterministic, between a quarter and all of max_tokens."""
    h = int.from_bytes(hashlib.sha256(seed).digest()[:4], "big")
    lo = max(1, max_tokens // 4)
    return lo + h % (max_tokens - lo + 1)


def _texts(v: Any) -> List[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [t for x in v for t in _texts(x)]
    if isinstance(v, dict):
        return [t for k in ("content", "text") if k in v for t in _texts(v[k])]
    return []


def go_duration(secs: float) -> str:
    ms = math.ceil(secs * 1000)
    if ms < 1000:
        return f"{ms}ms"
    m, s = divmod(ms / 1000, 60)
    return f"{int(m)}m{s:g}s" if m else f"{s:g}s"


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when 48 clients connect at once on
    # a loaded machine, and the SDKs retry them: a real server's backlog is deeper.
    request_queue_size = 256


class LLMUpstream:
    def __init__(self, slack: float = 0.1, event_gap: float = 0.0) -> None:
        self.slack = slack
        self.event_gap = event_gap  # seconds between a stream's events (a model generating)
        self.lock = threading.Lock()
        self.models: Dict[Tuple[str, str], Model] = {}
        self.served: List[Served] = []
        self.httpd = _Server(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def model(self, api: str, name: str, shape: Shape) -> None:
        """Limits of ``name`` under ``api`` ("openai" or "anthropic"); buckets start full."""
        dims = ["requests", "tokens"] if api == "openai" else ["requests", "input_tokens", "output_tokens"]
        with self.lock:
            m = Model(shape)
            for d in dims:
                rate, burst = shape.requests if d == "requests" else shape.tokens
                # A hidden tolerance, a share of the burst: a few ms of jitter between a
                # grant and the request's arrival never count.
                m.buckets[d] = Bucket(rate, burst, self.slack * burst)
            self.models[(api, name)] = m

    def of(self, api: str, model: str) -> List[Served]:
        with self.lock:
            return [s for s in self.served if s.api == api and s.model == model]

    # ------------------------------------------------------------ the APIs

    def admit(self, api: str, model: str, need: Dict[str, int], use: Dict[str, int]) -> Tuple[bool, Dict[str, str], float]:
        with self.lock:
            m = self.models.get((api, model))
            if m is None:
                return True, {}, 0.0
            for b in m.buckets.values():
                b.refill()
            ok = all(m.buckets[d].level >= n for d, n in need.items() if d in m.buckets)
            wait = 0.0
            if ok:
                for d, n in use.items():
                    if d in m.buckets:
                        m.buckets[d].level -= n
            else:
                wait = max(m.buckets[d].until(n) for d, n in need.items() if d in m.buckets)
            headers = self.headers(api, m)
            if not ok and m.shape.retry_after:
                headers["retry-after"] = str(max(1, math.ceil(wait)))
            return ok, headers, wait

    @staticmethod
    def headers(api: str, m: Model) -> Dict[str, str]:
        h: Dict[str, str] = {}
        for d, b in m.buckets.items():
            if api == "openai":
                h[f"x-ratelimit-limit-{d}"] = str(b.burst)
                h[f"x-ratelimit-remaining-{d}"] = str(math.floor(b.shown()))
                h[f"x-ratelimit-reset-{d}"] = go_duration(b.until_full())
            else:
                name = d.replace("_", "-")
                at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=b.until_full())
                at = at.replace(microsecond=0) + dt.timedelta(seconds=1 if at.microsecond else 0)
                h[f"anthropic-ratelimit-{name}-limit"] = str(b.burst)
                h[f"anthropic-ratelimit-{name}-remaining"] = str(math.floor(b.shown()))
                h[f"anthropic-ratelimit-{name}-reset"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return h

    def answer(self, path: str, headers: Dict[str, str], raw: bytes) -> Tuple[int, Dict[str, str], Any]:
        body = json.loads(raw or b"{}")
        model = str(body.get("model", ""))
        api = "openai" if path == "/v1/chat/completions" else "anthropic"
        msgs = body.get("messages") or []
        texts = _texts(msgs) + _texts(body.get("system", ""))
        inp = prompt_tokens(texts, len(msgs))
        max_out = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        out = completion_tokens(raw, max_out)
        if api == "openai":
            need = {"requests": 1, "tokens": inp + max_out}
            use = {"requests": 1, "tokens": inp + out}
        else:
            need = {"requests": 1, "input_tokens": inp, "output_tokens": max_out}
            use = {"requests": 1, "input_tokens": inp, "output_tokens": out}
        ok, h, _ = self.admit(api, model, need, use)
        retry_count = int(headers.get("x-stainless-retry-count") or 0)
        usage = {"input": inp, "output": out} if ok else {}
        with self.lock:
            self.served.append(Served(api, model, time.monotonic(), 200 if ok else 429, retry_count, usage))
        if not ok:
            if api == "openai":
                err = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
            else:
                err = {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}
            return 429, h, err
        stream = bool(body.get("stream"))
        if api == "openai":
            usage_obj = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
            if stream:
                want = bool((body.get("stream_options") or {}).get("include_usage"))
                return 200, h, list(openai_events(model, out, usage_obj if want else None))
            return 200, h, {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok " * out}, "finish_reason": "stop"}
                ],
                "usage": usage_obj,
            }
        if stream:
            return 200, h, list(anthropic_events(model, inp, out))
        return 200, h, {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "ok " * out}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": inp, "output_tokens": out},
        }


def openai_events(model: str, out: int, usage: Optional[Dict[str, int]]) -> Iterator[bytes]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    for i, part in enumerate(["ok "] * min(out, 3)):
        delta = {"role": "assistant", "content": part} if i == 0 else {"content": part}
        yield _sse(None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    yield _sse(None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage is not None:
        yield _sse(None, {**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def anthropic_events(model: str, inp: int, out: int) -> Iterator[bytes]:
    msg = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": inp, "output_tokens": 1},
    }
    yield _sse("message_start", {"type": "message_start", "message": msg})
    yield _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}})
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": out}},
    )
    yield _sse("message_stop", {"type": "message_stop"})


def _sse(event: Optional[str], data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _handler(up: LLMUpstream) -> type:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            status, headers, data = up.answer(
                self.path.split("?")[0], {k.lower(): v for k, v in self.headers.items()}, raw
            )
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if isinstance(data, list):  # server-sent events, chunked as they are written
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for ev in data:
                    self.wfile.write(f"{len(ev):x}\r\n".encode() + ev + b"\r\n")
                    self.wfile.flush()
                    if up.event_gap:
                        time.sleep(up.event_gap)
                self.wfile.write(b"0\r\n\r\n")
                return
            payload = json.dumps(data).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    return H
