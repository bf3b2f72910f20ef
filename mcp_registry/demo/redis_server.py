"""A throw-away Redis on 127.0.0.1 for the demo and the tests.

`RedisServer` runs a real `redis-server` (no persistence, its own temporary directory) when one
is on PATH, and otherwise fakeredis's TCP server in a child process, so both can be paused,
killed and restarted the same way::

    with RedisServer() as redis:
        print(redis.url)   # redis://127.0.0.1:<port>/0
        redis.pause()      # SIGSTOP: Redis stops answering, connections stay open
        redis.resume()
        redis.restart()    # same port, empty dataset
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Self

from mcp_registry.demo import _process

HOST: Final = "127.0.0.1"

# fakeredis's threaded TCP server, run as a child so that it can be paused and killed like
# a real redis-server. argv[1] is the port.
_EMBEDDED_SCRIPT: Final = """
import sys
from fakeredis import TcpFakeServer
server = TcpFakeServer(("127.0.0.1", int(sys.argv[1])), server_type="redis")
server.daemon_threads = True
print("READY", flush=True)  # the port is bound: whatever answers on it now is us
server.serve_forever(poll_interval=0.05)
"""


def redis_server_on_path() -> str | None:
    """The path of a `redis-server` executable on PATH, if there is one."""
    return shutil.which("redis-server")


def ping(port: int, *, timeout: float = 0.25, host: str = HOST) -> bool:
    """Whether something on `host`:`port` answers a RESP `PING` with `+PONG` within `timeout`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def server_pid(port: int, *, timeout: float = 0.25, host: str = HOST, password: str | None = None) -> int | None:
    """The `process_id` that the Redis on `host`:`port` reports in `INFO server`, if any."""
    auth = b""
    if password is not None:
        secret = password.encode()
        auth = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(auth + b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    match = re.search(rb"process_id:(\d+)", reply)
    return int(match[1]) if match else None


class RedisServer(_process.StartStop):
    """A Redis server child process on a free 127.0.0.1 port, stopped on exit.

    `embedded=None` (the default) uses `redis-server` from PATH when there is one and fakeredis
    otherwise; `True`/`False` force the choice (`False` without a `redis-server` raises
    `FileNotFoundError`). A real server can listen on another loopback `host` (a second "machine")
    and take extra `args` (cluster or replication settings) and a `config` file's text (written to its
directory, writable: Sentinel rewrites it); `executable` runs e.g. `redis-sentinel`; `password` is the
`default` user's, when the arguments set one (the readiness probe authenticates with it).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        embedded: bool | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        host: str = HOST,
        args: Sequence[str] = (),
        config: str | None = None,
        executable: str | None = None,
        password: str | None = None,
    ) -> None:
        executable = executable or redis_server_on_path()
        if embedded is None:
            embedded = executable is None
        if not embedded and executable is None:
            raise FileNotFoundError("redis-server is not on PATH; install Redis or use embedded=True")
        self.embedded: bool = embedded
        self._executable = executable
        if embedded and (host != HOST or args or config):
            raise ValueError("the embedded fakeredis server listens on 127.0.0.1 with no extra arguments")
        self.host = host
        self._args = list(args)
        self._config = config
        self._password = password
        self.port: int = port if port is not None else _process.free_ports(1, host)[0]
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def workdir(self) -> Path:
        """The server's own directory (its log, and e.g. a cluster's `nodes.conf`)."""
        if self._dir is None:
            raise RuntimeError("the Redis server has not been started")
        return Path(self._dir.name)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ping(self) -> bool:
        """Whether the server answers PING right now (False while it is paused or dead)."""
        return ping(self.port, host=self.host)

    def start(self) -> Self:
        """Start the server and wait (bounded) until it answers PING."""
        if self.running():
            raise RuntimeError("the Redis server is already running")
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="mcp-registry-redis-")
            if self._config is not None:
                (self.workdir / "redis.conf").write_text(self._config)
        self._proc = _process.spawn(self._command(), env=os.environ, log_path=self.log_path)
        try:
            _process.wait_ready(
                self._proc, self._ours_answers, timeout=self._startup_timeout, what=self._describe(),
                log_path=self.log_path,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after the stop timeout. Idempotent."""
        if self._proc is not None:
            _process.terminate(self._proc, timeout=self._stop_timeout)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; `start()` or `restart()` brings it back."""
        if self._proc is not None:
            _process.kill(self._proc)

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its connections but answers nothing until `resume()`.

        Returns once the server is stopped, so that no request sent afterwards is answered."""
        _process.wait_stopped(self._signal(signal.SIGSTOP), True)

    def resume(self) -> None:
        _process.wait_stopped(self._signal(signal.SIGCONT), False)

    def restart(self) -> None:
        """Stop and start again on the same port, with an empty dataset (a cluster node keeps its
        `nodes.conf`, so it rejoins its cluster)."""
        if self._proc is not None:
            _process.terminate(self._proc, timeout=self._stop_timeout)
        self.start()


    def _ours_answers(self) -> bool:
        """Our child answers on the port (not another process that took the port meanwhile)."""
        assert self._proc is not None
        if self.embedded:
            return b"READY" in self.log_path.read_bytes() and self.ping()
        return server_pid(self.port, host=self.host, password=self._password) == self._proc.pid

    def _signal(self, sig: signal.Signals) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("the Redis server is not running")
        _process.signal_group(self._proc, sig)
        return self._proc

    def _command(self) -> list[str]:
        if self.embedded:
            return [sys.executable, "-c", _EMBEDDED_SCRIPT, str(self.port)]
        assert self._executable is not None
        assert self._dir is not None
        return [
            self._executable,
            *([str(self.workdir / "redis.conf")] if self._config is not None else []),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--daemonize", "no",
            *self._args,
        ]  # fmt: skip

    def _describe(self) -> str:
        kind = "embedded fakeredis server" if self.embedded else "redis-server"
        return f"{kind} on port {self.port}"
