"""A fake rate-limited upstream for the examples (standard library only).

Endpoints, each sending the rate-limit headers of the API it imitates:

- ``POST /v1/chat/completions``  OpenAI-style: 20 requests and 2 400 tokens per 2 s
  (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; 429 + Retry-After when over).
- ``POST /v1/charges``           a side effect: every call creates a charge.
- ``POST /v1/predict``           a slow model (100 ms per call).
- ``GET /repos/<name>``          GitHub-style: 12 requests per fixed 2 s window
  (``x-ratelimit-limit/remaining/reset/used/resource``; 403 with remaining 0 when over).
- ``GET /stats``                 what it served, as JSON.

Run it alone with ``python fake_upstream.py [PORT]``; the examples start one in-process
when ``UPSTREAM_URL`` is not set.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Tuple

CHAT_REQUESTS, CHAT_TOKENS, CHAT_WINDOW = 20, 2400, 2.0
GITHUB_LIMIT, GITHUB_WINDOW = 12, 2


class Bucket:
    """A token bucket: ``amount`` per ``period`` seconds, a little lenient (``slack``) so a
    few milliseconds between permitd's grant and the request's arrival never count."""

    def __init__(self, amount: int, period: float, slack: float = 0.1) -> None:
        self.amount, self.period = amount, period
        self.capacity = amount * (1 + slack)
        self.level, self.at = float(amount), time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.at) * self.amount / self.period)
        self.at = now

    def take(self, n: int) -> bool:
        self.refill()
        if self.level >= n:
            self.level -= n
            return True
        return False

    def wait_for(self, n: int) -> float:
        return max(0.0, (n - self.level) * self.period / self.amount)


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.chat_requests = Bucket(CHAT_REQUESTS, CHAT_WINDOW)
        self.chat_tokens = Bucket(CHAT_TOKENS, CHAT_WINDOW)
        self.charges: Dict[str, Any] = {}
        self.gh_window, self.gh_used = 0, 0


def chat(st: State, body: Dict[str, Any]) -> Tuple[int, Dict[str, str], Any]:
    prompt = str(body.get("messages", [{}])[-1].get("content", ""))
    tokens = len(prompt.split()) + 60  # prompt + completion
    with st.lock:
        st.stats["chat"] += 1
        ok = st.chat_requests.take(1)
        if ok and not st.chat_tokens.take(tokens):
            st.chat_requests.level += 1
            ok = False
        rq, tk = st.chat_requests, st.chat_tokens
        headers = {
            "x-ratelimit-limit-requests": str(CHAT_REQUESTS),
            "x-ratelimit-remaining-requests": str(max(0, math.floor(min(rq.level, rq.amount)))),
            "x-ratelimit-reset-requests": f"{rq.wait_for(rq.amount):.3f}s",
            "x-ratelimit-limit-tokens": str(CHAT_TOKENS),
            "x-ratelimit-remaining-tokens": str(max(0, math.floor(min(tk.level, tk.amount)))),
            "x-ratelimit-reset-tokens": f"{tk.wait_for(tk.amount):.3f}s",
        }
        if not ok:
            st.stats["chat_429"] += 1
            headers["retry-after"] = str(max(1, math.ceil(max(rq.wait_for(1), tk.wait_for(tokens)))))
            return 429, headers, {"error": {"type": "rate_limit_exceeded"}}
    answer = {
        "choices": [{"message": {"role": "assistant", "content": prompt[::-1]}}],
        "usage": {"prompt_tokens": tokens - 60, "completion_tokens": 60, "total_tokens": tokens},
    }
    return 200, headers, answer


def github(st: State, path: str) -> Tuple[int, Dict[str, str], Any]:
    with st.lock:
        now = time.time()
        window = int(now // GITHUB_WINDOW)
        if window != st.gh_window:
            st.gh_window, st.gh_used = window, 0
        reset = (window + 1) * GITHUB_WINDOW
        st.stats["github"] += 1
        over = st.gh_used >= GITHUB_LIMIT
        if not over:
            st.gh_used += 1
        headers = {
            "x-ratelimit-limit": str(GITHUB_LIMIT),
            "x-ratelimit-remaining": str(GITHUB_LIMIT - st.gh_used),
            "x-ratelimit-used": str(st.gh_used),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
        }
        if over:
            st.stats["github_403"] += 1
            return 403, headers, {"message": "API rate limit exceeded"}
    return 200, headers, {"full_name": path[len("/repos/"):], "stargazers_count": len(path) * 7}


def make_handler(st: State) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, headers: Dict[str, str], body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Dict[str, Any]:
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}") if n else {}

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/v1/chat/completions":
                self._send(*chat(st, body))
            elif self.path == "/v1/charges":
                with st.lock:
                    st.stats["charges"] += 1
                    cid = f"ch_{st.stats['charges']}"
                    st.charges[cid] = body
                self._send(201, {"Location": f"/v1/charges/{cid}"}, {"id": cid, **body})
            elif self.path == "/v1/predict":
                time.sleep(0.1)
                with st.lock:
                    st.stats["predict"] += 1
                text = str(body.get("text", ""))
                good = sum(w in text for w in ("great", "good", "love"))
                bad = sum(w in text for w in ("awful", "bad", "slow"))
                label = "positive" if good > bad else "negative" if bad > good else "neutral"
                self._send(200, {}, {"label": label, "score": (good - bad + 2) / 4})
            else:
                self._send(404, {}, {"error": "not found"})

        def do_GET(self) -> None:
            if self.path == "/stats":
                with st.lock:
                    self._send(200, {}, dict(st.stats))
            elif self.path.startswith("/repos/"):
                self._send(*github(st, self.path))
            else:
                self._send(404, {}, {"error": "not found"})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def start(port: int = 0) -> Tuple[str, ThreadingHTTPServer]:
    """Start the fake in a background thread; returns its base URL and the server."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(State()))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


def upstream_url() -> str:
    """$UPSTREAM_URL, else a fake started in this process."""
    import os

    return os.environ.get("UPSTREAM_URL") or start()[0]


if __name__ == "__main__":
    url, httpd = start(int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
    print(f"fake upstream on {url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        httpd.shutdown()
