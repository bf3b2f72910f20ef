"""`python -m bench.faults`: what Redis faults and floods of made-up ids do to MCP requests.

Starts a real `redis-server` and two real uvicorn workers of the demo app (registry on, refresh
every second), then, for each fault, measures a window of load without the fault and a window
with it, back to back in the same processes, and reports p99 during the fault as a ratio of the
no-fault window's. Load is `wrk` (bench/wrk/mcp.lua, `stateful`: each connection's own session)
on worker-0, plus a light "churn" from this process on both workers (new sessions, calls, hops,
made-up ids, DELETEs), every answer checked. Then a flood of 10^5 distinct made-up ids, and the
same number of plain requests, on one worker: throughput, RSS, Redis `GET` calls, drops.

Writes the table into docs/reliability.md between `<!-- bench:faults:begin/end -->`.
See docs/reliability.md for what each column means.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
REPORT: Final = REPO_ROOT / "docs" / "reliability.md"
LEGACY_VERSION: Final = "2025-11-25"
CALL: Final = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}'
INITIALIZE: Final = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"bench-faults","version":"1.0"}}}'
)


# --- floods: pipelined raw HTTP/1.1 ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FloodResult:
    requests: int
    seconds: float
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _request(host: bytes, body: bytes, session_id: str | None) -> bytes:
    lines = [
        b"POST /mcp HTTP/1.1",
        b"host: " + host,
        b"accept: application/json, text/event-stream",
        b"content-type: application/json",
        b"mcp-protocol-version: " + LEGACY_VERSION.encode(),
        b"content-length: " + str(len(body)).encode(),
    ]
    if session_id is not None:
        lines.append(b"mcp-session-id: " + session_id.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _response(stream: BufferedByteReceiveStream) -> tuple[int, dict[bytes, bytes]]:
    """Read one response (status, lower-cased headers); its body must have a content-length."""
    head = await stream.receive_until(b"\r\n\r\n", 65536)
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get(b"content-length")
    if length is None:
        raise RuntimeError(f"a response without content-length: {head!r}")
    if int(length):
        await stream.receive_exactly(int(length))
    return int(status_line.split()[1]), headers


async def _connection(
    host: str, port: int, count: int, depth: int, next_id: Callable[[], str] | None, statuses: Counter[int]
) -> None:
    """`count` calls over one connection, `depth` in flight. `next_id=None`: this connection opens a
    session first and every call uses it (the plain case); otherwise each call carries `next_id()`."""
    stream: SocketStream = await anyio.connect_tcp(host, port)
    async with stream:
        reader = BufferedByteReceiveStream(stream)
        host_header = f"{host}:{port}".encode()
        own: str | None = None
        if next_id is None:
            await stream.send(_request(host_header, INITIALIZE, None))
            status, headers = await _response(reader)
            if status != 200 or b"mcp-session-id" not in headers:
                raise RuntimeError(f"initialize answered {status}")
            own = headers[b"mcp-session-id"].decode()
        done = 0
        while done < count:
            batch = min(depth, count - done)
            await stream.send(
                b"".join(_request(host_header, CALL, own if next_id is None else next_id()) for _ in range(batch))
            )
            for _ in range(batch):
                status, _ = await _response(reader)
                statuses[status] += 1
            done += batch


def distinct_ids(prefix: str) -> Callable[[int], str]:
    """Made-up ids `<prefix>-<n>`, one per request."""
    return lambda n: f"{prefix}-{n:08d}"


async def flood(
    url: str,
    total: int,
    ids: Callable[[int], str] | None,
    *,
    connections: int = 8,
    depth: int = 32,
) -> FloodResult:
    """`total` legacy `tools/call` requests to `url` over `connections` pipelined connections.

    Request `n` carries the id `ids(n)` (a stateful worker that never issued it answers 404); with
    `ids=None` each connection opens its own session first and calls on it (plain traffic, 200).
    Callers bound it in time (`anyio.fail_after`).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    statuses: Counter[int] = Counter()
    numbers = iter(range(total))
    next_id = None if ids is None else (lambda: ids(next(numbers)))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for number in range(connections):
            share = total // connections + (number < total % connections)
            tg.start_soon(_connection, host, port, share, depth, next_id, statuses)
    return FloodResult(requests=total, seconds=time.monotonic() - started, statuses=dict(statuses))


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def _progress_timer() -> Iterator[Callable[[str], None]]:
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    yield progress


@dataclass
class _Args:
    argv: Sequence[str] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.parse_args(argv)
    print(shlex.join(["python", "-m", "bench.faults"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
