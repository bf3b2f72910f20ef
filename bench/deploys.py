"""Calls through rolling deploys: how long a held legacy session's calls take while its hosts restart.

`python -m bench.deploys [--deploys N] [--clients N]`: two hosts (`uvicorn --workers 2` on 127.0.0.2
and 127.0.0.3, the demo app, `MCP_SESSION_CONTINUITY=adopt`) behind a real nginx
(`deploy/nginx-rolling-deploy.conf`), one redis-server. N official Python clients (legacy) each hold
one session and call `whoami` every 50 ms, beside the TypeScript SDK client when it is installed
(`npm ci` in tests/clients/ts; its calls are counted, not timed). The hosts are deployed in turn
(SIGTERM, then the new process on the same address), `--deploys` times. Every Python call is timed
from the client; the table gives the calls, the failed ones and the latency, and how many took
longer than a second. Prints markdown; `bench/README.md` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread
from mcp import Client, Implementation

from mcp_registry.demo.app import ENV_ALLOWED_HOSTS, ENV_JSON_RESPONSE
from mcp_registry.demo.hosts import UvicornHost
from mcp_registry.demo.proxies import Nginx
from mcp_registry.demo.redis_server import RedisServer

ROOT: Final = Path(__file__).resolve().parents[1]
ROLLING: Final = ROOT / "deploy" / "nginx-rolling-deploy.conf"
TS_CLIENT: Final = ROOT / "tests" / "clients" / "ts"
ADDRESSES: Final = ("127.0.0.2", "127.0.0.3")
PERIOD: Final = 0.05
KEY: Final = secrets.token_urlsafe(32)


def host_env(address: str, redis_url: str) -> dict[str, str]:
    return {
        "MCP_SESSION_CONTINUITY": "adopt", "MCP_SESSION_REGISTRY_HASH_KEY": KEY,
        "MCP_SESSION_FORWARD_LISTEN": f"{address}:0", "MCP_SESSION_REGISTRY": "1",
        "MCP_SESSION_REGISTRY_URL": redis_url,
        "MCP_SESSION_REGISTRY_PREFIX": "bench-deploys", "MCP_SESSION_REGISTRY_REFRESH_SECONDS": "5",
        ENV_JSON_RESPONSE: "1", ENV_ALLOWED_HOSTS: ",".join(f"{a}:*" for a in ("127.0.0.1", *ADDRESSES)),
    }  # fmt: skip


def _stop_all(hosts: list[UvicornHost]) -> None:
    for host in hosts:
        host.stop()


def run(deploys: int, clients: int) -> list[str]:
    calls: list[float] = []
    failed: list[str] = []
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer(embedded=False))
        hosts = [UvicornHost(a, workers=2, env=host_env(a, redis.url)).start() for a in ADDRESSES]
        stack.callback(_stop_all, hosts)
        nginx = stack.enter_context(Nginx(ROLLING, [f"{h.address}:{h.port}" for h in hosts]))
        url = f"{nginx.url}/mcp"
        ts = None
        if (TS_CLIENT / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
            ts = subprocess.Popen(["node", str(TS_CLIENT / "steady.mjs"), url, "600", str(int(PERIOD * 1000))],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

        def deploy_all() -> None:
            for _ in range(deploys):
                for i, old in enumerate(hosts):
                    old.stop()
                    hosts[i] = UvicornHost(old.address, workers=2, env=host_env(old.address, redis.url),
                                           port=old.port).start()  # fmt: skip

        async def client(n: int, stop: anyio.Event) -> None:
            info = Implementation(name=f"bench-{n}", version="1.0")
            async with Client(url, mode="legacy", client_info=info, read_timeout_seconds=30) as session:
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        await session.call_tool("whoami", {})
                        calls.append(time.perf_counter() - started)
                    except Exception as exc:  # what the user's code would see
                        failed.append(repr(exc)[:120])
                    await anyio.sleep(PERIOD)

        async def main() -> None:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                for n in range(clients):
                    tg.start_soon(client, n, stop)
                await anyio.sleep(2)
                await anyio.to_thread.run_sync(deploy_all)
                await anyio.sleep(2)
                stop.set()

        started = time.monotonic()
        anyio.run(main)
        elapsed = time.monotonic() - started
        ts_line = "not installed"
        if ts is not None:
            ts.terminate()
            out, _ = ts.communicate(timeout=30)
            result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            ts_line = f"{result.get('ok', 0)} calls, {result.get('failed', '?')} failed"
    ms = sorted(c * 1000 for c in calls)
    return [
        f"Command: `python -m bench.deploys --deploys {deploys} --clients {clients}` "
        f"({2 * deploys} host restarts in {elapsed:.0f} s; the TypeScript client: {ts_line})",
        "",
        "| Python client calls | failed | p50 ms | p99 ms | max ms | over 1 s |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {len(ms)} | {len(failed)} | {statistics.median(ms):.1f} | {ms[int(len(ms) * 0.99)]:.1f} "
        f"| {ms[-1]:.1f} | {sum(1 for m in ms if m > 1000)} |",
        *([""] + [f"- failed: {f}" for f in failed[:5]] if failed else []),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.deploys")
    parser.add_argument("--deploys", type=int, default=3, help="rolling deploys of both hosts (default 3)")
    parser.add_argument("--clients", type=int, default=3, help="official Python clients (default 3)")
    args = parser.parse_args()
    print("\n".join(run(args.deploys, args.clients)))


if __name__ == "__main__":
    main()
