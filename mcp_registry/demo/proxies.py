"""A real nginx or HAProxy in front of real hosts, configured from one of the files in `deploy/`.

The files in `deploy/` name their upstreams `app-1:8000`, `app-2:8000`, … (the compose
services) and listen on 8080. `Nginx` and `Haproxy` run such a file as it is, with only what
differs on one machine substituted: each `app-<i>:8000` by a host's address, the listen port,
and (nginx) the paths it writes (pid, temp files) into a directory of its own::

    with Nginx(Path("deploy/nginx.conf"), ["127.0.0.2:8001", "127.0.0.3:8002"]) as lb:
        lb.url   # "http://127.0.0.1:<port>"
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from mcp_registry.demo import _process


def nginx_on_path() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def haproxy_on_path() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)


def _upstreams(template: str, upstreams: Sequence[str]) -> str:
    return re.sub(r"\bapp-(\d+):8000\b", lambda m: upstreams[int(m[1]) - 1], template)


def render(template: str, upstreams: Sequence[str], *, port: int, workdir: Path) -> str:
    """`template` with `app-<i>:8000` → `upstreams[i-1]`, `listen 8080` → 127.0.0.1:`port`, paths in `workdir`."""
    text = re.sub(r"\blisten 8080;", f"listen 127.0.0.1:{port};", _upstreams(template, upstreams))
    text = re.sub(r"\bpid [^;]+;", f"pid {workdir}/nginx.pid;", text)
    temp_paths = "".join(
        f"    {kind}_temp_path {workdir}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", f"error_log {workdir}/error.log warn;\nhttp {{\n{temp_paths}", 1)
    return text


def render_haproxy(template: str, upstreams: Sequence[str], *, port: int) -> str:
    """An HAProxy file with `app-<i>:8000` → `upstreams[i-1]` and `bind :8080` → 127.0.0.1:`port`."""
    return re.sub(r"\bbind :8080\b", f"bind 127.0.0.1:{port}", _upstreams(template, upstreams))


class Nginx(_process.ManagedChild):
    """nginx in the foreground (`daemon off`)."""

    what = "nginx"

    def __init__(self, config: Path, upstreams: Sequence[str], *, startup_timeout: float = 10.0) -> None:
        super().__init__(startup_timeout=startup_timeout, stop_timeout=5.0)
        self.config = config
        self.upstreams = list(upstreams)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self.port = _process.free_ports(1)[0]
        check, run = self._commands(self.workdir)
        done = subprocess.run(check, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            problem = (done.stderr or done.stdout).strip()
            raise _process.ChildFailedError(f"{self.what} rejected {self.config}: {problem}")
        self._launch(run, env={}, log_path=self.workdir / f"{self.what}.log", ready=self._listening)
        return self

    def _commands(self, workdir: Path) -> tuple[list[str], list[str]]:
        """The command that checks the rendered file, and the one that runs it in the foreground."""
        binary = nginx_on_path()
        if binary is None:
            raise FileNotFoundError("nginx is not installed (Debian package nginx)")
        conf = workdir / "nginx.conf"
        conf.write_text(render(self.config.read_text(), self.upstreams, port=self.port, workdir=workdir))
        return [binary, "-t", "-q", "-c", str(conf)], [binary, "-c", str(conf), "-g", "daemon off;"]

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


class Haproxy(Nginx):
    """HAProxy in the foreground (`-db`)."""

    what = "haproxy"

    def _commands(self, workdir: Path) -> tuple[list[str], list[str]]:
        binary = haproxy_on_path()
        if binary is None:
            raise FileNotFoundError("haproxy is not installed (Debian package haproxy)")
        conf = workdir / "haproxy.cfg"
        conf.write_text(render_haproxy(self.config.read_text(), self.upstreams, port=self.port))
        return [binary, "-c", "-q", "-f", str(conf)], [binary, "-db", "-f", str(conf)]
