"""Bounded, realistic MCP traffic through a non-sticky balancer.

Four kinds of client run side by side until a deadline (and never past a request budget):

- legacy clients: the official client in `mode="legacy"` opens a session, lists and calls
  tools; its requests hop between workers, a hop gets the SDK's 404 "Session not found",
  and the client opens a new session, as a spec-following client does;
- raw-HTTP clients sending made-up ids (never issued) and malformed ids (empty, too long,
  non-ASCII, two different values), DELETEs of made-up sessions, and calls with no id at all
  (what a gateway that drops `mcp-session-id` sends);
- modern clients speaking the sessionless 2026-07-28 revision (`mode="2026-07-28"`).

`drive_traffic` fills a `TrafficSummary` as it goes, so a caller can show progress.
"""

from __future__ import annotations

import argparse
import functools
import math
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import anyio
import httpx
from mcp import Client, Implementation, MCPError
from mcp_types import TextContent

MODERN_VERSION: Final = "2026-07-28"
LEGACY_VERSION: Final = "2025-06-18"
SESSION_HEADER: Final = "mcp-session-id"
REQUEST_TIMEOUT: Final = 5.0
LEGACY_CLIENTS: Final = (
    Implementation(name="demo-agent", version="1.4.2"),
    Implementation(name="demo-ide-plugin", version="0.9.0"),
    Implementation(name="demo-batch-job", version="2.0.1"),
)
MODERN_CLIENT: Final = Implementation(name="demo-modern-agent", version="3.0.0")
_ACCEPT: Final = "application/json, text/event-stream"


@dataclass
class TrafficSummary:
    """What the clients did and saw. Updated live while `drive_traffic` runs."""

    sessions_opened: int = 0
    """Legacy sessions the clients initialized."""
    tool_calls: int = 0
    """Successful tool calls and lists, legacy and modern."""
    session_not_found: int = 0
    """404 "Session not found" answers legacy clients got after a hop."""
    reinitializations: int = 0
    """New sessions opened because the previous one got a 404."""
    modern_calls: int = 0
    """Successful calls of the sessionless 2026-07-28 clients (also in `tool_calls`)."""
    fabricated_sent: int = 0
    """Requests carrying a made-up session id."""
    malformed_sent: int = 0
    """Requests carrying a malformed session id."""
    deletes_sent: int = 0
    """Explicit DELETEs with a made-up or malformed id."""
    missing_sent: int = 0
    """Non-initialize requests with no session id at all (what a gateway that drops the header sends)."""
    errors: int = 0
    """Anything else that failed (timeouts, connection errors, unexpected answers)."""
    served_by: Counter[str] = field(default_factory=Counter)
    """Worker ids that answered `whoami`: the balancer spreads requests across all of them."""
    raw_statuses: Counter[int] = field(default_factory=Counter)
    """HTTP status of every raw-HTTP request."""
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        """Requests the clients made: each `initialize`, list, call and raw-HTTP request counts one.

        The official client's own notifications, GET streams and DELETEs are not counted; the
        balancer's per-worker counts include them."""
        return (
            self.sessions_opened + self.tool_calls + self.session_not_found + self.errors
            + self.raw_statuses.total()
        )  # fmt: skip


@dataclass(frozen=True)
class TrafficPlan:
    """How many clients of each kind run, and their bounds."""

    legacy_clients: int = 4
    raw_clients: int = 1
    modern_clients: int = 1
    think_seconds: float = 0.02
    """Pause between two requests of one client (a real client does other work in between)."""
    max_requests_per_client: int = 5_000
    calls_per_session: int = 8

    @classmethod
    def for_clients(cls, clients: int) -> TrafficPlan:
        """`clients` legacy clients, plus about one raw and one modern client per four of them."""
        helpers = max(1, math.ceil(clients / 4))
        return cls(legacy_clients=clients, raw_clients=helpers, modern_clients=helpers)


async def drive_traffic(
    base_url: str, *, duration: float, plan: TrafficPlan | None = None, summary: TrafficSummary | None = None
) -> TrafficSummary:
    """Send traffic to `base_url + "/mcp"` for `duration` seconds; return what happened."""
    plan = plan or TrafficPlan()
    summary = summary if summary is not None else TrafficSummary()
    mcp_url = base_url.rstrip("/") + "/mcp"
    budget = _Budget(time.monotonic() + duration, plan.max_requests_per_client)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
        with anyio.move_on_after(duration + REQUEST_TIMEOUT):
            async with anyio.create_task_group() as tg:
                for i in range(plan.legacy_clients):
                    client_info = LEGACY_CLIENTS[i % len(LEGACY_CLIENTS)]
                    tg.start_soon(_legacy_client, mcp_url, client_info, plan, budget, summary)
                for i in range(plan.raw_clients):
                    tg.start_soon(_raw_client, http, mcp_url, i, plan, budget, summary)
                for _ in range(plan.modern_clients):
                    tg.start_soon(_modern_client, mcp_url, plan, budget, summary)
    summary.elapsed = time.monotonic() - started
    return summary


@dataclass(frozen=True)
class _Budget:
    deadline: float
    max_requests: int

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def requests(self) -> Iterator[int]:
        """Request numbers for one client, until the deadline or the budget runs out."""
        for n in range(self.max_requests):
            if self.remaining() <= 0:
                return
            yield n


async def _legacy_client(
    url: str, client_info: Implementation, plan: TrafficPlan, budget: _Budget, summary: TrafficSummary
) -> None:
    after_404 = False
    requests = budget.requests()
    for _ in requests:
        with anyio.move_on_after(budget.remaining()):
            try:
                async with Client(
                    url, mode="legacy", client_info=client_info, read_timeout_seconds=REQUEST_TIMEOUT
                ) as client:
                    summary.sessions_opened += 1
                    summary.reinitializations += after_404
                    after_404 = False
                    await client.list_tools()
                    summary.tool_calls += 1
                    for n, _ in zip(range(plan.calls_per_session), requests, strict=False):
                        await anyio.sleep(plan.think_seconds)
                        await _call_a_tool(client, n, summary)
            except Exception as exc:  # the client raises exception groups from its transport
                if _is_session_not_found(exc):
                    summary.session_not_found += 1
                    after_404 = True
                else:
                    summary.errors += 1
        await anyio.sleep(plan.think_seconds)


async def _call_a_tool(client: Client, n: int, summary: TrafficSummary) -> None:
    if n % 3 == 0:
        result = await client.call_tool("whoami", {})
        summary.served_by[_text(result.content)] += 1
    elif n % 3 == 1:
        await client.call_tool("add", {"a": n, "b": 1})
    else:
        await client.call_tool("echo", {"text": f"hello {n}"})
    summary.tool_calls += 1


async def _modern_client(url: str, plan: TrafficPlan, budget: _Budget, summary: TrafficSummary) -> None:
    try:
        with anyio.move_on_after(budget.remaining()):
            async with Client(
                url, mode=MODERN_VERSION, client_info=MODERN_CLIENT, read_timeout_seconds=REQUEST_TIMEOUT
            ) as client:
                for n in budget.requests():
                    await _call_a_tool(client, n, summary)
                    summary.modern_calls += 1
                    await anyio.sleep(plan.think_seconds)
    except Exception:
        summary.errors += 1


# Raw-HTTP requests: (what it counts as, method, extra headers, body). Header values are
# bytes so that non-ASCII and duplicated headers reach the server as they are.
_RawRequest = tuple[str, str, list[tuple[bytes, bytes]], dict[str, object] | None]


def _raw_requests(n: int) -> _RawRequest:
    made_up = secrets.token_hex(16).encode()
    tools_list: dict[str, object] = {"jsonrpc": "2.0", "id": n, "method": "tools/list"}
    initialize: dict[str, object] = {
        "jsonrpc": "2.0", "id": n, "method": "initialize",
        "params": {"protocolVersion": LEGACY_VERSION, "capabilities": {},
                   "clientInfo": {"name": "demo-raw-http", "version": "0.1.0"}},
    }  # fmt: skip
    sid = SESSION_HEADER.encode()
    variants: list[_RawRequest] = [
        ("fabricated", "POST", [(sid, made_up)], tools_list),
        ("fabricated", "POST", [(sid, made_up)], initialize),  # a stale id on initialize: a fresh session
        ("delete", "DELETE", [(sid, made_up)], None),
        ("malformed", "POST", [(sid, b"")], tools_list),
        ("malformed", "POST", [(sid, b"x" * 300)], tools_list),
        ("malformed", "POST", [(sid, "séance-✓".encode())], tools_list),
        ("malformed", "POST", [(sid, made_up), (sid, secrets.token_hex(16).encode())], tools_list),
        ("malformed", "DELETE", [(sid, b"two words")], None),
        ("missing", "POST", [], tools_list),  # a gateway that dropped mcp-session-id
    ]
    return variants[n % len(variants)]


async def _raw_client(
    http: httpx.AsyncClient, url: str, index: int, plan: TrafficPlan, budget: _Budget, summary: TrafficSummary
) -> None:
    for n in budget.requests():
        kind, method, headers, body = _raw_requests(n + index)
        request = http.build_request(
            method, url, json=body,
            headers=[(b"accept", _ACCEPT.encode()), (b"mcp-protocol-version", LEGACY_VERSION.encode()), *headers],
        )  # fmt: skip
        try:
            response = await http.send(request)
        except httpx.HTTPError:
            summary.errors += 1
        else:
            summary.raw_statuses[response.status_code] += 1
            if kind == "fabricated":
                summary.fabricated_sent += 1
            elif kind == "malformed":
                summary.malformed_sent += 1
            elif kind == "missing":
                summary.missing_sent += 1
            if method == "DELETE":
                summary.deletes_sent += 1
        await anyio.sleep(plan.think_seconds * 5)


def _text(content: Sequence[object]) -> str:
    return next((block.text for block in content if isinstance(block, TextContent)), "?")


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _is_session_not_found(exc: BaseException) -> bool:
    return any(isinstance(leaf, MCPError) and "Session not found" in str(leaf) for leaf in _leaves(exc))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mcp_registry.demo.traffic",
        description="Drive the demo traffic mix against an MCP endpoint (bounded in time and count).",
    )
    parser.add_argument("--url", required=True, help="base URL of the balancer, e.g. http://balancer:8080")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="legacy clients (default 4)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = TrafficPlan.for_clients(args.clients)
    summary = anyio.run(functools.partial(drive_traffic, args.url, duration=args.duration, plan=plan))
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
