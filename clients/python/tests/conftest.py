"""Fixtures: the real permitd binary on a free port, and a real local HTTP upstream that
answers with scripted statuses and rate-limit headers."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Awaitable, Deque, Dict, Iterator, List, Tuple, TypeVar

import grpc
import pytest

import permitd

HERE = Path(__file__).resolve().parent
PY_ROOT = HERE.parent
REPO = PY_ROOT.parent.parent
T = TypeVar("T")


# ---------------------------------------------------------------- the permitd server


def permitd_binary() -> Path:
    """$PERMITD_BIN, else the repo's target/release/permitd, built when missing."""
    env = os.environ.get("PERMITD_BIN")
    if env:
        p = Path(env)
        if not p.is_file():
            pytest.fail(f"PERMITD_BIN={env} is not a file")
        return p
    p = REPO / "target" / "release" / "permitd"
    if not p.is_file():
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=REPO, check=True)
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_ok(target: str) -> bool:
    """grpc.health.v1.Health/Check answers SERVING (field 1 = 1)."""
    with grpc.insecure_channel(target) as ch:
        check = ch.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda _: b"",
            response_deserializer=lambda b: b,
        )
        try:
            return bool(check(None, timeout=1.0) == b"\x08\x01")
        except grpc.RpcError:
            return False


@dataclass
class Server:
    target: str
    proc: subprocess.Popen  # type: ignore[type-arg]
    data_dir: str
    log: Path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start_server(binary: Path, tmp: str) -> Server:
    """Start `permitd serve` on a free port; wait (bounded) until it is healthy."""
    last = ""
    for _ in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        target = f"127.0.0.1:{port}"
        data = tempfile.mkdtemp(prefix="data-", dir=tmp)
        log = Path(tmp) / f"permitd-{port}.log"
        out = open(log, "wb")
        proc = subprocess.Popen(
            [str(binary), "serve", "--listen", target, "--data-dir", data, "--log-format", "human"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        server = Server(target, proc, data, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if health_ok(target):
                return server
            time.sleep(0.05)
        last = server.log_tail()
        stop_server(server)
    raise RuntimeError(f"permitd did not become healthy:\n{last}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=5)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(permitd_binary(), str(tmp_path_factory.mktemp("permitd")))
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def target(server: Server) -> str:
    return server.target


@pytest.fixture
def client(target: str) -> Iterator[permitd.Client]:
    with permitd.Client(target) as c:
        yield c


@pytest.fixture
def dead_target() -> str:
    """An address where nothing listens: any RPC to it fails with UNAVAILABLE."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def make_resource(client: permitd.Client, request: pytest.FixtureRequest) -> Any:
    """Define a fresh resource, unique to this test: make_resource(limits=[...], ...)."""
    base = request.node.name.replace("[", ".").replace("]", "").replace("_", "-")[:60]
    base = "".join(c if c.isalnum() or c in "._-" else "-" for c in base)

    def make(**kwargs: Any) -> str:
        name = f"py:{base}:{uuid.uuid4().hex[:8]}"
        kwargs.setdefault("limits", [permitd.Limit("requests", 100, 60)])
        # The tests' limits are the truth: no slow start unless a test asks for it.
        kwargs.setdefault("limits_known", True)
        client.put_resource(name, **kwargs)
        return name

    return make


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run one async test body in a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def require_service(client: permitd.Client, service: str) -> None:
    """Fail (never skip) with a clear message when the server lacks a service."""
    try:
        if service == "Idempotency":
            with client.idempotent(f"probe-{uuid.uuid4().hex}", fingerprint="probe"):
                pass
        else:
            client.cache_get("probe", "probe")
    except permitd.PermitdError as e:
        if e.code == "UNIMPLEMENTED":
            pytest.fail(
                f"this permitd build answers UNIMPLEMENTED for {service}: the client's "
                f"{service} support needs a server with that service"
            )
        raise


# ---------------------------------------------------------------- the HTTP upstream


@dataclass
class Hit:
    method: str
    path: str
    at: float
    headers: Dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1. Script answers per path with ``script(path, ...)``;
    an unscripted path answers 200 with X-RateLimit headers. Every request is recorded."""

    base: str
    scripts: Dict[str, Deque[Tuple[int, Dict[str, str], bytes]]] = field(default_factory=dict)
    hits: List[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def path(self) -> str:
        return f"/t/{uuid.uuid4().hex[:12]}"

    def url(self, path: str) -> str:
        return self.base + path

    def script(self, path: str, *answers: Tuple[int, Dict[str, str], Any]) -> str:
        q: Deque[Tuple[int, Dict[str, str], bytes]] = collections.deque()
        for status, headers, body in answers:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            q.append((status, headers, data))
        with self.lock:
            self.scripts[path] = q
        return self.url(path)

    def hits_of(self, path: str) -> List[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]

    def answer(self, method: str, path: str, headers: Dict[str, str], body: bytes) -> Tuple[int, Dict[str, str], bytes]:
        with self.lock:
            self.hits.append(Hit(method, path, time.monotonic(), headers, body))
            q = self.scripts.get(path)
            if q:
                ans = q.popleft() if len(q) > 1 else q[0]  # the last answer repeats
                return ans
        return (
            200,
            {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99", "X-RateLimit-Reset": "60"},
            json.dumps({"ok": True, "path": path}).encode(),
        )


def _handler(up: Upstream) -> type:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            status, headers, data = up.answer(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return H


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Upstream("")))
    up = Upstream(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler(up)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield up
    httpd.shutdown()
    httpd.server_close()


def pytest_report_header(config: Any) -> str:
    return f"python {sys.version.split()[0]}, permitd client {permitd.__version__}"
