"""A real nginx in front of real hosts, configured from one of the files in `deploy/`.

The files in `deploy/` name their upstreams `app-1:8000`, `app-2:8000`, … (the compose
services) and listen on 8080. `Nginx` runs such a file as it is, with only what differs on one
machine substituted: each `app-<i>:8000` by a host's address, the listen port, and the paths
nginx writes (pid, temp files) into a directory of its own::

    with Nginx(Path("deploy/nginx.conf"), ["127.0.0.2:8001", "127.0.0.3:8002"]) as lb:
        lb.url   # "http://127.0.0.1:<port>"
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from mcp_registry.demo import _process


def nginx_on_path() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def render(template: str, upstreams: Sequence[str], *, port: int, workdir: Path) -> str:
    """`template` with `app-<i>:8000` → `upstreams[i-1]`, `listen 8080` → 127.0.0.1:`port`, paths in `workdir`."""
    text = re.sub(r"\bapp-(\d+):8000\b", lambda m: upstreams[int(m[1]) - 1], template)
    text = re.sub(r"\blisten 8080;", f"listen 127.0.0.1:{port};", text)
    text = re.sub(r"\bpid [^;]+;", f"pid {workdir}/nginx.pid;", text)
    temp_paths = "".join(
        f"    {kind}_temp_path {workdir}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", f"error_log {workdir}/error.log warn;\nhttp {{\n{temp_paths}", 1)
    return text


class Nginx:
    def __init__(self, config: Path, upstreams: Sequence[str], *, startup_timeout: float = 10.0) -> None:
        self.config = config
        self.upstreams = list(upstreams)
        self.port = 0
        self._startup_timeout = startup_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        binary = nginx_on_path()
        if binary is None:
            raise FileNotFoundError("nginx is not installed (Debian package nginx)")
        self._dir = tempfile.TemporaryDirectory(prefix="mcp-registry-nginx-")
        workdir = Path(self._dir.name)
        self.port = _process.free_ports(1)[0]
        conf = workdir / "nginx.conf"
        conf.write_text(render(self.config.read_text(), self.upstreams, port=self.port, workdir=workdir))
        log = workdir / "nginx.log"
        check = subprocess.run([binary, "-t", "-q", "-c", str(conf)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise _process.ChildFailedError(f"nginx rejected {self.config}: {check.stderr.strip()}")
        self._proc = _process.spawn([binary, "-c", str(conf), "-g", "daemon off;"], env={}, log_path=log)
        try:
            _process.wait_ready(self._proc, self._listening, timeout=self._startup_timeout, what="nginx", log_path=log)
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        try:
            if self._proc is not None:
                _process.terminate(self._proc, timeout=5.0)
        finally:
            self._proc = None
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
