"""Where a worker's internal listener binds, and the address other workers reach it at. Pure parsing.

`MCP_SESSION_FORWARD_LISTEN` is `HOST:PORT` (port 0: any free port) or `unix:PATH`;
`MCP_SESSION_FORWARD_ADVERTISE` is `HOST`, `HOST:PORT` or `unix:PATH`. IPv6 hosts go in brackets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mcp_registry.env import ENV_FORWARD_ADVERTISE, ENV_FORWARD_LISTEN, ConfigError

UNIX_PREFIX: Final = "unix:"
MAX_ADDRESS_BYTES: Final = 96
"""An address travels (encrypted) inside every session id, which must stay within 256 bytes."""


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP `host:port` or a Unix socket path (`host` None)."""

    host: str | None
    port: int = 0
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return f"{UNIX_PREFIX}{self.path}"
        host = f"[{self.host}]" if self.host is not None and ":" in self.host else self.host
        return f"{host}:{self.port}"

    def with_port(self, port: int) -> Address:
        return Address(self.host, port)


def parse_listen(text: str) -> Address:
    """`HOST:PORT` or `unix:PATH`; errors name `MCP_SESSION_FORWARD_LISTEN`."""
    return _parse(text, ENV_FORWARD_LISTEN, port_required=True)


def parse_advertise(text: str) -> Address:
    """`HOST`, `HOST:PORT` or `unix:PATH`; errors name `MCP_SESSION_FORWARD_ADVERTISE`."""
    return _parse(text, ENV_FORWARD_ADVERTISE, port_required=False)


def parse_route(text: str) -> Address | None:
    """An address read back from a session id (already authenticated), or None if it does not parse."""
    try:
        return _parse(text, "route", port_required=True)
    except ConfigError:
        return None


def _parse(text: str, variable: str, *, port_required: bool) -> Address:
    text = text.strip()
    if len(text.encode()) > MAX_ADDRESS_BYTES:
        raise ConfigError(f"{variable} must be at most {MAX_ADDRESS_BYTES} bytes; got {len(text.encode())}")
    if text.startswith(UNIX_PREFIX):
        path = text[len(UNIX_PREFIX):]
        if not path or "\x00" in path:
            raise ConfigError(f"{variable} must be unix:PATH with a non-empty path; got {text!r}")
        return Address(None, path=path)
    host, port = _split_host_port(text)
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ConfigError(f"{variable} must be HOST:PORT or unix:PATH; got {text!r}")
    if port is None:
        if port_required:
            raise ConfigError(f"{variable} must be HOST:PORT (port 0: any free port) or unix:PATH; got {text!r}")
        return Address(host, 0)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{variable} has a port that is not 0-65535; got {text!r}")
    return Address(host, int(port))


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            return "", None
        if not rest:
            return host, None
        return (host, rest[1:]) if rest.startswith(":") else ("", None)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    if ":" in text:  # a bare IPv6 address needs brackets to carry a port
        return "", None
    return text, None
