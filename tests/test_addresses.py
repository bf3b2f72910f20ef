"""Listen and advertise addresses: what parses, and errors that name the variable (pure)."""

from __future__ import annotations

import pytest

from mcp_registry.addresses import Address, parse_advertise, parse_listen, parse_route
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
