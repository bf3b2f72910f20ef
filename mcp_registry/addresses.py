"""Where a worker's internal listener binds, and the address other workers reach it at. Pure parsing.

`MCP_SESSION_FORWARD_LISTEN` is `HOST:PORT` (port 0: any free port) or `unix:PATH`;
`MCP_SESSION_FORWARD_ADVERTISE` is `HOST`, `HOST:PORT` or `unix:PATH`. IPv6 hosts go in brackets.
`MCP_SESSION_FORWARD_PEERS` says where a worker may forward: comma-separated CIDRs (`10.0.0.0/16`,
`127.0.0.1`, `fd00::/64`), host names, and `unix:DIRECTORY` for Unix sockets in that directory.
"""

from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass, field
from typing import Final

from mcp_registry.env import ENV_FORWARD_ADVERTISE, ENV_FORWARD_LISTEN, ENV_FORWARD_PEERS, ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

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
    if "|" in text or "#" in text:  # the registry records routes as `address#boot` in `|`-separated values
        raise ConfigError(f"{variable} must not contain '|' or '#'; got {text!r}")
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


@dataclass(frozen=True, slots=True)
class Peers:
    """Where this worker may forward: an address outside is never dialled (a forged route is `fabricated`)."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)
    """Host names allowed as they are (an operator's choice; never resolved here)."""
    directories: tuple[str, ...] = ()
    """Unix-socket directories (normalised, absolute)."""

    def allows(self, address: Address) -> bool:
        if address.path is not None:
            path = posixpath.normpath(address.path)
            return posixpath.isabs(path) and any(posixpath.dirname(path) == d for d in self.directories)
        assert address.host is not None
        try:
            ip = ipaddress.ip_address(address.host)
        except ValueError:
            return address.host.lower() in self.hosts
        return any(ip in network for network in self.networks)

    def __str__(self) -> str:
        parts = [*map(str, self.networks), *sorted(self.hosts), *(f"{UNIX_PREFIX}{d}" for d in self.directories)]
        return ",".join(parts) or "nothing"


def parse_peers(text: str) -> Peers:
    """`MCP_SESSION_FORWARD_PEERS`: CIDRs, host names and `unix:DIRECTORY`, comma-separated."""
    networks: list[Network] = []
    hosts: set[str] = set()
    directories: list[str] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        if entry.startswith(UNIX_PREFIX):
            directory = posixpath.normpath(entry[len(UNIX_PREFIX):])
            if not posixpath.isabs(directory) or "\x00" in directory:
                raise ConfigError(f"{ENV_FORWARD_PEERS}: {entry!r} must be unix: and an absolute directory")
            directories.append(directory)
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if any(c.isspace() or c in "/[]:" for c in entry):
                raise ConfigError(
                    f"{ENV_FORWARD_PEERS}: {entry!r} is neither a CIDR, a host name nor unix:DIRECTORY"
                ) from None
            hosts.add(entry.lower())
    if not (networks or hosts or directories):
        raise ConfigError(f"{ENV_FORWARD_PEERS} must name at least one CIDR, host name or unix:DIRECTORY")
    return Peers(tuple(networks), frozenset(hosts), tuple(directories))


def default_peers(listen: Address, advertised: Address | None) -> Peers:
    """Without `MCP_SESSION_FORWARD_PEERS`: this host's socket directory, and the advertised address's network.

    A Unix listener allows its own directory; a TCP one allows the network of the address it is reached
    at (its advertise address, else its listen address): loopback's 127.0.0.0/8 (or ::1; and this host
    for 0.0.0.0), a /24 of IPv4, a /64 of IPv6; a host name allows itself. Wider deployments set the
    variable.
    """
    networks: list[Network] = []
    hosts: set[str] = set()
    directories: list[str] = []
    for address in (listen, advertised):
        if address is None:
            continue
        if address.path is not None:
            directories.append(posixpath.dirname(posixpath.normpath(address.path)))
            continue
        assert address.host is not None
        try:
            ip = ipaddress.ip_address(address.host)
        except ValueError:
            hosts.add(address.host.lower())
            continue
        loopback = ipaddress.ip_network("127.0.0.0/8" if ip.version == 4 else "::1/128")
        if ip.is_loopback:
            networks.append(loopback)
        elif ip.is_unspecified:  # a route to 0.0.0.0 (or ::) reaches this host itself
            networks += [loopback, ipaddress.ip_network(ip)]
        else:
            networks.append(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))
    return Peers(tuple(networks), frozenset(hosts), tuple(directories))
