"""Tokens, TLS and mTLS against the real server: a throwaway CA made with Debian's openssl,
the server started with --tls-cert/--tls-key/--tls-client-ca and principals in its config;
sync and async clients present a token (argument or $PERMITD_TOKEN) or a client certificate.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import grpc
import pytest

import permitd

from .conftest import free_port, permitd_binary, run

ADMIN, WORKER, VIEWER = "pmt_py_admin_0123456789", "pmt_py_worker_0123456789", "pmt_py_viewer_0123456789"
SPIFFE = "spiffe://corp/ns/etl/sa/py-worker"


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> None:
    _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "7", "-subj", f"/CN=py {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _leaf(d: Path, name: str, ca: str, ext: str, serial: int) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-set_serial", str(serial), "-days", "7", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


class Secure(NamedTuple):
    target: str
    certs: Path


def _principal(name: str, role: str, token: str = "", cert: str = "") -> str:
    out = f'[[auth.principals]]\nname = "{name}"\ntenant = "team-py"\nrole = "{role}"\n'
    if token:
        out += f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
    if cert:
        out += f'cert_identity = "{cert}"\n'
    return out


def _healthy(target: str, ca: bytes) -> bool:
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(target, creds) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda _: b"",
                               response_deserializer=lambda b: b)
        try:
            return bool(check(None, timeout=1.0) == b"\x08\x01")
        except grpc.RpcError:
            return False


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is required in CI (apt-get install -y openssl)")
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("certs")
    _ca(d, "ca")
    _ca(d, "rogue")
    _leaf(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n", 1)
    _leaf(d, "worker", "ca", f"subjectAltName=URI:{SPIFFE}\nbasicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n", 2)
    config = d / "permitd.toml"
    config.write_text('[auth]\nmode = "any"\n\n' + _principal("admin", "admin", ADMIN)
                      + _principal("worker", "worker", WORKER) + _principal("viewer", "viewer", VIEWER)
                      + _principal("cert-worker", "worker", cert=SPIFFE))
    port = free_port()
    target = f"127.0.0.1:{port}"
    log = open(d / "permitd.log", "wb")
    proc = subprocess.Popen(
        [str(permitd_binary()), "serve", "--listen", target, "--data-dir", str(d / "data"), "--config", str(config),
         "--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key"),
         "--tls-client-ca", str(d / "ca.pem"), "--tls-client-auth", "optional"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    ca = (d / "ca.pem").read_bytes()
    deadline = time.monotonic() + 30
    while not _healthy(target, ca):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("permitd with TLS did not start:\n" + (d / "permitd.log").read_text(errors="replace"))
        time.sleep(0.05)
    with permitd.Client(target, token=ADMIN, root_certificates=d / "ca.pem") as admin:
        admin.put_resource("py:auth", limits=[permitd.Limit("requests", 1000, 60)], limits_known=True)
    yield Secure(target, d)
    proc.terminate()
    proc.wait(timeout=15)


def test_token_over_tls(secure: Secure) -> None:
    with permitd.Client(secure.target, token=WORKER, root_certificates=secure.certs / "ca.pem") as c:
        with c.permit("py:auth") as p:
            assert p.permit_id
        assert c.get_quota("py:auth").resource == "py:auth"
        with c.watch("py:") as w:
            assert next(iter(w)).resource == "py:auth"


def test_missing_or_wrong_credentials(secure: Secure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERMITD_TOKEN", raising=False)
    ca = (secure.certs / "ca.pem").read_bytes()
    with permitd.Client(secure.target, root_certificates=ca) as c:
        with pytest.raises(permitd.Unauthenticated, match="Bearer"):
            c.acquire("py:auth")
    with permitd.Client(secure.target, token="pmt_nobody_has_this", root_certificates=ca) as c:
        with pytest.raises(permitd.Unauthenticated, match="unknown bearer token") as e:
            c.get_quota("py:auth")
        assert "pmt_nobody" not in str(e.value)
    with permitd.Client(secure.target, token=VIEWER, root_certificates=ca) as c:
        with pytest.raises(permitd.PermissionDenied, match="role viewer cannot AcquirePermit"):
            c.acquire("py:auth")
        with pytest.raises(PermissionError):
            c.put_resource("py:other", limits=[permitd.Limit("requests", 1, 1)])
    # A server certificate from a CA the client does not trust: no connection.
    with permitd.Client(secure.target, token=WORKER, root_certificates=secure.certs / "rogue.pem", timeout=3) as c:
        with pytest.raises(permitd.PermitdUnavailable):
            c.get_quota("py:auth")


def test_token_from_environment(secure: Secure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERMITD_TOKEN", WORKER)
    with permitd.Client(secure.target, root_certificates=secure.certs / "ca.pem") as c:
        c.acquire("py:auth").release()


def test_client_certificate(secure: Secure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERMITD_TOKEN", raising=False)
    d = secure.certs
    with permitd.Client(secure.target, root_certificates=d / "ca.pem", client_cert=d / "worker.pem",
                        client_key=d / "worker.key") as c:
        c.acquire("py:auth").release()
    with pytest.raises(ValueError, match="go together"):
        permitd.Client(secure.target, root_certificates=d / "ca.pem", client_cert=d / "worker.pem")
    with pytest.raises(ValueError, match="cannot read"):
        permitd.Client(secure.target, root_certificates=d / "missing.pem")


def test_async_token_and_certificate(secure: Secure, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERMITD_TOKEN", raising=False)
    d = secure.certs

    async def body() -> None:
        async with permitd.AsyncClient(secure.target, token=WORKER, root_certificates=d / "ca.pem") as c:
            async with c.permit("py:auth") as p:
                assert p.permit_id
        async with permitd.AsyncClient(secure.target, root_certificates=d / "ca.pem",
                                       client_cert=d / "worker.pem", client_key=d / "worker.key") as c:
            await (await c.acquire("py:auth")).release()
        async with permitd.AsyncClient(secure.target, root_certificates=d / "ca.pem") as c:
            with pytest.raises(permitd.Unauthenticated):
                await c.acquire("py:auth")

    run(body())
