"""Run the audit: read the registry's aggregates for a window and print them (tables or JSON).

The audit only reads Redis (see `mcp_registry.registry.reader`). Every failure a user can
cause or meet (a bad window, a wrong URL, an unreachable or empty registry) ends with one
line on stderr and a non-zero exit status:

| status | meaning |
|--------|---------|
| 0 | the report was printed |
| 1 | Redis could not be reached or read |
| 2 | bad input (`--since`, `--url`, `--prefix`, an `MCP_SESSION_*` variable) |
| 3 | the registry holds nothing for the window |

Its settings are `RegistryConfig`'s: the `MCP_SESSION_*` variables, with the URL and prefix the
caller passes winning over them.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
from typing import Final

from rich.console import Console

from mcp_registry import redis_url
from mcp_registry.audit.tables import format_duration, render
from mcp_registry.config import RegistryConfig, prefix_problem
from mcp_registry.env import ConfigError
from mcp_registry.redis_url import redact
from mcp_registry.registry.client import REDIS_ERRORS, RedisMisconfigured, connect, first_contact
from mcp_registry.registry.reader import read_audit
from mcp_registry.registry.report import AuditReport

DEFAULT_SINCE: Final = "1h"
MAX_SINCE_SECONDS: Final = 90 * 86_400
REDIS_TIMEOUT_SECONDS: Final = 3.0
"""Connect and read timeout: an unreachable Redis fails in seconds, not minutes."""

EXIT_OK: Final = 0
EXIT_REDIS: Final = 1
EXIT_USAGE: Final = 2
EXIT_EMPTY: Final = 3

_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")


class AuditInputError(ValueError):
    """Input the audit cannot work with; the message is the one line the user sees."""


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `15m`, `2h`, `7d` or plain seconds (`3600`); positive, at most 90 days."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise AuditInputError(f"invalid duration {text!r}: use e.g. 90s, 15m, 2h, 7d or plain seconds")
    seconds = float(match[1]) * _UNITS[match[2]]
    if not seconds > 0:
        raise AuditInputError(f"invalid duration {text!r}: it must be longer than zero")
    if seconds > MAX_SINCE_SECONDS:
        raise AuditInputError(f"invalid duration {text!r}: at most 90d")
    return seconds


def run_audit(url: str | None, *, prefix: str | None, since: float | None, as_json: bool, console: Console) -> int:
    """Read the registry at `url` and print the audit of the last `since` seconds (default 1 h).

    `url` and `prefix` None: the deployment's (`MCP_SESSION_REGISTRY_URL`, `..._PREFIX`, else the defaults).

    Returns the exit status; a failure prints one line on stderr (never a traceback). Call it
    from synchronous code (it runs its own event loop).
    """
    window = parse_duration(DEFAULT_SINCE) if since is None else since
    try:
        _check_window(window)
        config = settings(url, prefix)
    except (AuditInputError, ConfigError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    url, prefix = config.url, config.prefix
    try:
        report = asyncio.run(_read(config, window))
    except (AuditInputError, ConfigError, RedisMisconfigured) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except REDIS_ERRORS as exc:
        return _fail(f"cannot read the registry at {redact(url)}: {_reason(exc)}", EXIT_REDIS)
    if not report.has_data:
        return _fail(
            f"no registry data in the last {format_duration(window)} at {redact(url)} under prefix {prefix!r} "
            "(are the workers running with MCP_SESSION_REGISTRY=1 and the same prefix?)",
            EXIT_EMPTY,
        )
    if as_json:
        console.file.write(json.dumps(report.to_json(), indent=2) + "\n")
        console.file.flush()
    else:
        render(report, console, url=url, prefix=prefix)
    return EXIT_OK


def read_report(url: str, *, prefix: str, since: float) -> AuditReport:
    """The audit report itself, for code that wants the numbers (runs its own event loop)."""
    return asyncio.run(_read(settings(url, prefix), since))


def _check_window(seconds: float) -> None:
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SINCE_SECONDS):
        raise AuditInputError(f"invalid window of {seconds!r} seconds: it must be > 0 and at most 90d")


def settings(url: str | None, prefix: str | None) -> RegistryConfig:
    """The registry settings the audit uses: the deployment's (`RegistryConfig.from_env`), with the URL
    and prefix given here winning, each checked first so that the one line names what was given."""
    overrides: dict[str, object] = {"redis_timeout": REDIS_TIMEOUT_SECONDS}
    if url is not None:
        try:
            redis_url.parse(url.strip())
        except ValueError as exc:
            raise AuditInputError(f"invalid Redis URL {redact(url)!r}: {exc}") from None
        overrides["url"] = url.strip()
    if prefix is not None:
        if prefix_problem(prefix) is not None:
            raise AuditInputError(f"invalid prefix {prefix!r}: a non-empty key namespace without braces, '|' or spaces")
        overrides["prefix"] = prefix
    return RegistryConfig.from_env(None, **overrides)


async def _read(config: RegistryConfig, window: float) -> AuditReport:
    try:
        client = connect(config, max_connections=1)
    except ValueError as exc:  # redis-py's own URL parsing
        raise AuditInputError(f"invalid Redis URL {redact(config.url)!r}: {exc}") from None
    try:
        await first_contact(client, config)
        return await read_audit(
            client,
            prefix=config.prefix,
            since_seconds=window,
            now=time.time(),
            session_ttl=config.session_ttl_seconds,
        )
    finally:
        await client.aclose()


def _fail(message: str, status: int) -> int:
    print(f"mcp-registry audit: {' '.join(message.split())}", file=sys.stderr)
    return status


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


