"""Listen and advertise addresses: what parses, and errors that name the variable (pure)."""

from __future__ import annotations

import pytest

from mcp_registry.addresses import Address, default_peers, parse_advertise, parse_listen, parse_peers, parse_route
from mcp_registry.env import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.2:0", Address("127.0.0.2", 0)),
        ("0.0.0.0:9000", Address("0.0.0.0", 9000)),
        ("[::1]:8001", Address("::1", 8001)),
        ("unix:/run/mcp/fwd-{pid}.sock", Address(None, path="/run/mcp/fwd-{pid}.sock")),
        (" host.internal:1 ", Address("host.internal", 1)),
    ],
)
def test_listen_addresses(text: str, expected: Address) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.2", "host:", "host:70000", "host:x", "unix:", "::1:80", "a b:1", "/x:1", ""])
def test_a_bad_listen_address_names_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="MCP_SESSION_FORWARD_LISTEN"):
        parse_listen(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5", Address("10.0.0.5", 0)),
        ("10.0.0.5:7000", Address("10.0.0.5", 7000)),
        ("[fd00::5]", Address("fd00::5")),
    ],
)
def test_advertise_addresses_may_leave_the_port_to_the_listener(text: str, expected: Address) -> None:
    assert parse_advertise(text) == expected


def test_a_bad_advertise_address_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="MCP_SESSION_FORWARD_ADVERTISE"):
        parse_advertise("::1")


def test_an_address_too_long_to_seal_is_refused() -> None:
    with pytest.raises(ConfigError, match="96 bytes"):
        parse_listen("unix:/" + "p" * 100)


@pytest.mark.parametrize("address", [Address("127.0.0.2", 8), Address("::1", 8), Address(None, path="/tmp/a.sock")])
def test_an_address_reads_back_from_its_text(address: Address) -> None:
    assert parse_route(str(address)) == address


# --- MCP_SESSION_FORWARD_PEERS: where a worker may forward -------------------------------------------
@pytest.mark.parametrize(
    ("peers", "address", "allowed"),
    [
        ("10.0.0.0/16", Address("10.0.7.9", 9000), True),
        ("10.0.0.0/16", Address("10.1.0.1", 9000), False),
        ("10.0.0.0/16", Address("169.254.169.254", 80), False),  # a cloud metadata service
        ("127.0.0.2", Address("127.0.0.2", 1), True),
        ("127.0.0.2", Address("127.0.0.3", 1), False),
        ("fd00::/64", Address("fd00::7", 1), True),
        ("fd00::/64", Address("fd01::7", 1), False),
        ("owner.internal", Address("OWNER.internal", 1), True),
        ("owner.internal", Address("other.internal", 1), False),
        ("10.0.0.0/8", Address("owner.internal", 1), False),  # a name is never resolved to be checked
        ("unix:/run/mcp", Address(None, path="/run/mcp/hop-7.sock"), True),
        ("unix:/run/mcp", Address(None, path="/run/docker.sock"), False),  # a container runtime's socket
        ("unix:/run/mcp", Address(None, path="/run/mcp/../docker.sock"), False),
        ("unix:/run/mcp", Address(None, path="/run/mcp/sub/hop.sock"), False),
        ("unix:/run/mcp", Address(None, path="run/mcp/hop.sock"), False),
        ("unix:/run/mcp", Address("10.0.0.1", 1), False),
        ("unix:/run/mcp, 10.0.0.0/8", Address("10.2.3.4", 1), True),
    ],
)
def test_peers_allow_only_what_they_name(peers: str, address: Address, allowed: bool) -> None:
    assert parse_peers(peers).allows(address) is allowed


@pytest.mark.parametrize("text", ["", " , ", "unix:relative/dir", "10.0.0.0/33", "a b", "[::1]", "host:80"])
def test_bad_peers_name_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="MCP_SESSION_FORWARD_PEERS"):
        parse_peers(text)


@pytest.mark.parametrize(
    ("listen", "advertise", "inside", "outside"),
    [
        ("unix:/tmp/mcp-registry-hop-{pid}.sock", None,
         [Address(None, path="/tmp/mcp-registry-hop-77.sock")],
         [Address(None, path="/var/run/docker.sock"), Address("127.0.0.1", 2375)]),
        ("127.0.0.2:0", None, [Address("127.0.0.3", 41000)], [Address("10.0.0.1", 1)]),
        ("0.0.0.0:9000", "10.1.2.3", [Address("10.1.2.99", 9000)],
         [Address("10.1.3.1", 9000), Address("169.254.169.254", 80)]),
        ("[::]:9000", "[fd00::1:5]", [Address("fd00::9", 9000)], [Address("fd00:0:0:1::9", 9000)]),
        ("0.0.0.0:9000", None, [Address("0.0.0.0", 9000), Address("127.0.0.1", 9000)], [Address("10.0.0.1", 9000)]),
        ("0.0.0.0:9000", "worker-3.mcp.svc", [Address("worker-3.mcp.svc", 9000)], [Address("worker-4.mcp.svc", 1)]),
    ],
)  # fmt: skip
def test_the_default_peers_are_this_host_and_the_advertised_network(
    listen: str, advertise: str | None, inside: list[Address], outside: list[Address]
) -> None:
    peers = default_peers(parse_listen(listen), parse_advertise(advertise) if advertise else None)
    assert all(peers.allows(a) for a in inside), str(peers)
    assert not any(peers.allows(a) for a in outside), str(peers)
