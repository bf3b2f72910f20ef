"""Child processes that never outlive us: own process group, bounded stop, death signal on Linux.

Every child the demo starts (redis-server, uvicorn workers, the balancer) goes through `spawn`
and `terminate`. A child gets its own session, so a Ctrl-C in the terminal reaches only us and
we decide the shutdown order; on Linux it also gets SIGKILL if the thread that started it dies
without cleaning up (e.g. the parent is SIGKILLed).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

_PR_SET_PDEATHSIG: Final = 1
POLL_INTERVAL: Final = 0.05

Probe = Callable[[], bool]
"""A readiness check: true once the child answers."""


class ChildFailedError(RuntimeError):
    """A child process exited or never became ready; the message carries the tail of its log."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that were free a moment ago (all held open while choosing)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGKILL the child when its parent thread goes away.

    The kernel ties the signal to the *thread* that forked, so the hook is used only from the
    main thread (a worker thread that exits would otherwise take the child with it).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def spawn(args: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `args` in its own session with stdout and stderr going to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(args),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send `sig` to the child's process group, unless the child has already been reaped."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def wait_stopped(proc: subprocess.Popen[bytes], stopped: bool, *, timeout: float = 5.0) -> None:
    """Wait until every thread of the child is stopped (SIGSTOP) or running again (SIGCONT).

    A signal is delivered asynchronously: a thread busy on another CPU can still answer one
    request after `kill` returns. Linux shows the state in /proc; elsewhere this returns at once.
    """
    tasks = Path(f"/proc/{proc.pid}/task")
    if not tasks.is_dir():
        return
    deadline = time.monotonic() + timeout
    while _all_stopped(tasks) is not stopped and proc.poll() is None:
        if time.monotonic() >= deadline:
            raise ChildFailedError(f"process {proc.pid} did not {'stop' if stopped else 'continue'} in {timeout:g}s")
        time.sleep(0.005)


def _all_stopped(tasks: Path) -> bool:
    states = []
    for stat in tasks.glob("*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) S ...": the state follows the last ')' (comm may contain one)
            states.append(stat.read_text().rpartition(")")[2].split()[0])
    return bool(states) and all(state in {"T", "t"} for state in states)


def terminate(proc: subprocess.Popen[bytes], *, timeout: float) -> int:
    """SIGTERM the child's group, wait up to `timeout`, then SIGKILL. Returns the exit code.

    An interruption while waiting (a second Ctrl-C) still ends with the group killed.
    """
    if proc.returncode is not None:
        return proc.returncode
    try:
        signal_group(proc, signal.SIGTERM)
        signal_group(proc, signal.SIGCONT)  # a paused child must wake up to see SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    finally:
        if proc.returncode is None:
            kill(proc)
    return proc.wait()


def kill(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL the child's group and reap it."""
    signal_group(proc, signal.SIGKILL)
    return proc.wait()


def log_tail(log_path: Path, lines: int = 20) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def uvicorn_bound(log_path: Path, port: int, host: str = "127.0.0.1") -> bool:
    """Whether the uvicorn child logging to `log_path` says it listens on `port`.

    Asked before any health probe: other tests or demos on this machine run servers too, and
    one of them could answer on a port our child failed to bind. (Needs uvicorn's log level
    at `info` or lower, its default.)
    """
    try:
        return f"running on http://{host}:{port} " in log_path.read_text(errors="replace")
    except OSError:
        return False


def wait_ready(proc: subprocess.Popen[bytes], ready: Probe, *, timeout: float, what: str, log_path: Path) -> None:
    """Poll `ready()` until it is true; fail if the child exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ChildFailedError(f"{what} exited with code {proc.returncode}:\n{log_tail(log_path)}")
        if ready():
            return
        if time.monotonic() >= deadline:
            raise ChildFailedError(f"{what} was not ready within {timeout:g}s:\n{log_tail(log_path)}")
        time.sleep(POLL_INTERVAL)


class StartStop:
    """A thing that `start()`s and `stop()`s; `with thing:` starts it and always stops it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ManagedChild(StartStop):
    """One child process with a working directory of its own, stopped (bounded) by `stop()` or by
    leaving a `with` block. Subclasses build the command in `start()` and call `_launch`."""

    what = "child"

    def __init__(self, *, startup_timeout: float, stop_timeout: float) -> None:
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def workdir(self) -> Path:
        """The child's directory (logs, configuration), made on first use, removed by `stop()`."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix=f"mcp-registry-{self.what.replace(' ', '-')}-")
        return Path(self._dir.name)

    def _launch(self, args: Sequence[str], *, env: Mapping[str, str], log_path: Path, ready: Probe) -> None:
        """Spawn the child and wait (bounded) until `ready()`; on failure nothing is left running."""
        self._proc = spawn(args, env=env, log_path=log_path)
        try:
            wait_ready(self._proc, ready, timeout=self._startup_timeout, what=self.what, log_path=log_path)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM, SIGKILL after the stop timeout, then remove the directory. Idempotent."""
        try:
            if self._proc is not None and self._proc.returncode is None:
                terminate(self._proc, timeout=self._stop_timeout)
        finally:
            if self._proc is not None and self._proc.returncode is None:
                kill(self._proc)
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None
