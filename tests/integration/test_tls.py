"""The registry and the audit through Redis over TLS, with ACL users, against a real `redis-server`.

The test makes a throw-away CA and a server and a client certificate with the `openssl` CLI, and
starts `redis-server` with TLS only (`--port 0`, `--tls-port`), client certificates required,
the `default` user off and two ACL users:

- `registry`: read and write, on keys under the registry's prefix only (`~<prefix>:*`), so any
  key the workers wrote elsewhere would be refused (and show up as a Redis error in their log);
- `auditor`: read-only, on the same keys: the audit works with it, so it needs no write.

A real worker writes its sessions through `rediss://registry:<password>@...` with
`MCP_SESSION_REGISTRY_TLS_CA_FILE` / `..._CERT_FILE` / `..._KEY_FILE`; `mcp-registry audit`
reads them back through `rediss://auditor:<password>@...`. Neither password appears in a log.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import redis

from mcp_registry.demo import _process
from mcp_registry.demo.redis_server import redis_server_on_path
from mcp_registry.env import ENV_REFRESH_SECONDS, ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY
from mcp_registry.registry import key_schema
from mcp_registry.testing import initialize_request, session_headers, tool_call
from tests.conftest import require
from tests.integration.test_faults import (
    PREFIX,
    RECOVERY_BOUND,
    REFRESH_SECONDS,
    UNAVAILABLE,
    StartCluster,
    poll,
    registry_env,
)

pytestmark = pytest.mark.integration

OPENSSL_TIMEOUT: Final = 30


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @property
    def client_env(self) -> dict[str, str]:
        return {ENV_TLS_CA: str(self.ca), ENV_TLS_CERT: str(self.client_cert), ENV_TLS_KEY: str(self.client_key)}


def openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT,
                          check=False)  # fmt: skip
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def make_pki(directory: Path, ips: tuple[str, ...] = ("127.0.0.1",)) -> Pki:
    """A CA, and a server (SAN: `ips`) and a client certificate it signed, all P-256, valid a day.

    The server certificate may also act as a client (a cluster node connects to the others with it)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=mcp-registry test CA", cwd=directory)  # fmt: skip
    san = ",".join(f"IP:{ip}" for ip in ips)
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
        openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                cwd=directory)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=directory)  # fmt: skip
    return Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


@dataclass(frozen=True)
class TlsRedis:
    port: int
    registry_password: str
    auditor_password: str
    pki: Pki

    def url(self, user: str, password: str) -> str:
        return f"rediss://{user}:{password}@127.0.0.1:{self.port}/0"

    @property
    def registry_url(self) -> str:
        return self.url("registry", self.registry_password)

    @property
    def auditor_url(self) -> str:
        return self.url("auditor", self.auditor_password)

    def client(self, url: str) -> redis.Redis:
        return redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, ssl_ca_certs=str(self.pki.ca),
            ssl_certfile=str(self.pki.client_cert), ssl_keyfile=str(self.pki.client_key),
        )  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    require(redis_server_on_path() is not None, "redis-server (on PATH)")
    require(shutil.which("openssl") is not None, "openssl (on PATH), to make the test's certificates")
    pki = make_pki(tmp_path)
    server = TlsRedis(_process.free_ports(1)[0], secrets.token_hex(16), secrets.token_hex(16), pki)
    config = tmp_path / "redis.conf"
    config.write_text(
        "\n".join([
            "port 0", f"tls-port {server.port}", "bind 127.0.0.1", 'save ""', "appendonly no", f"dir {tmp_path}",
            f"tls-cert-file {pki.server_cert}", f"tls-key-file {pki.server_key}", f"tls-ca-cert-file {pki.ca}",
            "tls-auth-clients yes",
            "user default off",
            f"user registry on >{server.registry_password} ~{PREFIX}:* resetchannels +@all -@dangerous",
            f"user auditor on >{server.auditor_password} ~{PREFIX}:* resetchannels -@all +@read +@connection",
        ]) + "\n"
    )  # fmt: skip
    log = tmp_path / "redis.log"
    proc = _process.spawn([str(redis_server_on_path()), str(config)], env=os.environ, log_path=log)
    try:
        _process.wait_ready(proc, lambda: _answers(server), timeout=10, what="redis-server with TLS", log_path=log)
    except _process.ChildFailedError:
        _process.terminate(proc, timeout=5)
        tail = _process.log_tail(log, 5)
        if "Bad directive" in tail and "tls" in tail.lower():  # built without TLS (BUILD_TLS=no)
            require(False, f"a redis-server built with TLS support; this one refuses the TLS settings: {tail}")
        raise
    try:
        yield server
    finally:
        _process.terminate(proc, timeout=5)


def _answers(server: TlsRedis) -> bool:
    try:
        with server.client(server.auditor_url) as r:
            return bool(r.ping())
    except (redis.RedisError, OSError):
        return False


def audit(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SESSION_")}
    return subprocess.run(
        [sys.executable, "-m", "mcp_registry.cli", "audit", "--json", "--url", url, "--prefix", PREFIX],
        env={**base, ENV_REFRESH_SECONDS: str(REFRESH_SECONDS), **env},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_the_registry_writes_and_the_audit_reads_through_tls_and_acl_users(
    tls_redis: TlsRedis, worker_cluster: StartCluster
) -> None:
    cluster = worker_cluster(1, env=registry_env(tls_redis.registry_url, **tls_redis.pki.client_env))
    opened: list[str] = []
    with httpx.Client(timeout=10) as http:
        for _ in range(3):
            response = http.post(
                cluster.urls[0] + "/mcp", json=initialize_request("tls"), headers=session_headers(None)
            )
            assert response.status_code == 200
            opened.append(response.headers["mcp-session-id"])
        made_up = f"made-up-{secrets.token_hex(8)}"
        stale = http.post(cluster.urls[0] + "/mcp", json=tool_call("add", {"a": 1, "b": 2}),
                          headers=session_headers(made_up))  # fmt: skip
        assert stale.status_code == 404

    with tls_redis.client(tls_redis.auditor_url) as r:
        session_keys = poll(lambda: list(r.scan_iter(f"{PREFIX}:s:*")), lambda k: len(k) == 3, bound=RECOVERY_BOUND)
        assert len(session_keys) == 3
        assert {key_schema.parse_live(r.get(key))[0] for key in session_keys} == {"worker-0"}
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.set(f"{PREFIX}:probe", "x")  # the auditor cannot write

    def audited() -> dict[str, Any]:
        done = audit(tls_redis.auditor_url, tls_redis.pki.client_env)
        assert done.returncode == 0, done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return document

    document = poll(audited, lambda d: d["lookups"]["fabricated"] == 1, bound=RECOVERY_BOUND)
    assert document["sessions"]["created"] == 3
    assert document["sessions"]["live"] == 3
    assert document["lookups"]["fabricated"] == 1
    assert document["workers"] == ["worker-0"]

    log = cluster.log(0)
    assert UNAVAILABLE not in log  # no command was refused: every key is under the prefix
    assert tls_redis.registry_password not in log


def test_without_the_right_credentials_nothing_is_read(tls_redis: TlsRedis) -> None:
    wrong = tls_redis.url("auditor", "not-the-password")
    done = audit(wrong, tls_redis.pki.client_env)
    assert done.returncode == 1
    assert "not-the-password" not in done.stderr + done.stdout
    assert done.stderr.count("\n") == 1

    no_client_certificate = audit(tls_redis.auditor_url, {ENV_TLS_CA: str(tls_redis.pki.ca)})
    assert no_client_certificate.returncode == 1
    assert tls_redis.auditor_password not in no_client_certificate.stderr
