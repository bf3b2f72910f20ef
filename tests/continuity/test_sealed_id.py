"""The sealed session id: round trip, tamper evidence, shape and length bounds (pure)."""

from __future__ import annotations

import string
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_registry.continuity.sealed_id import MAX_ID_BYTES, Route, SessionIdSealer, Shape
from mcp_registry.decision import parse_session_id

KEY = b"HHfeW6j3xGzYx2xsgJeiLAMEFLxTn7eJqww0MTGTlPY"
ROUTE = Route("127.0.0.2:43117", b"\x00\x01\x02\x03\x04\x05\x06\x07")
SDK_ID = "3f9c1d2e4b5a69788796a5b4c3d2e1f0"
sealer = SessionIdSealer(KEY)


def test_an_id_opens_to_the_route_it_was_sealed_with() -> None:
    assert sealer.open(sealer.seal(SDK_ID, ROUTE)) == ROUTE


def test_the_id_keeps_the_sdk_s_id_and_the_label_in_front() -> None:
    sealed = sealer.seal(SDK_ID, ROUTE, "host-a")

    assert sealed.startswith(f"{SDK_ID}.host-a.")


def test_the_address_is_not_readable_in_the_id() -> None:
    sealed = sealer.seal(SDK_ID, ROUTE)

    assert "127.0.0.2" not in sealed
    assert "43117" not in sealed


def test_a_sealed_id_is_a_valid_session_id_for_the_sdk_and_for_us() -> None:
    for label in (None, "h", "a" * 16):
        sealed = sealer.seal(uuid.uuid4().hex, Route("[fd00::1]:65535", ROUTE.boot), label)
        assert parse_session_id(sealed.encode()) == sealed
        assert set(sealed) <= set(string.ascii_letters + string.digits + "-_.")


def test_another_deployment_s_key_cannot_open_it() -> None:
    assert SessionIdSealer(b"another-key-0123456789abcdef0000").open(sealer.seal(SDK_ID, ROUTE)) is Shape.FORGED


def test_every_single_byte_change_is_rejected() -> None:
    sealed = sealer.seal(SDK_ID, ROUTE, "host-a")
    alphabet = sorted(set(string.printable.strip()))  # visible ASCII
    for position in range(len(sealed)):
        for replacement in alphabet:
            if replacement == sealed[position]:
                continue
            changed = sealed[:position] + replacement + sealed[position + 1:]
            assert not isinstance(sealer.open(changed), Route), (position, replacement)


def test_removing_or_adding_a_byte_is_rejected() -> None:
    sealed = sealer.seal(SDK_ID, ROUTE, "host-a")
    for position in range(len(sealed)):
        assert not isinstance(sealer.open(sealed[:position] + sealed[position + 1:]), Route)
        assert not isinstance(sealer.open(sealed[:position] + "A" + sealed[position:]), Route)


def test_a_label_moved_to_another_id_is_rejected() -> None:
    sdk_id, _, sealed = sealer.seal(SDK_ID, ROUTE, "host-a").split(".")

    assert sealer.open(f"{sdk_id}.host-b.{sealed}") is Shape.FORGED


@pytest.mark.parametrize(
    "session_id",
    [SDK_ID, "made-up", "a.b", "a.b.c", "x" * 256, f"{SDK_ID}.host.{'A' * 7}", f"{SDK_ID}.bad label.{'A' * 40}"],
)
def test_ids_that_are_not_sealed_are_plain(session_id: str) -> None:
    assert sealer.open(session_id) is Shape.PLAIN


def test_a_made_up_id_of_the_sealed_shape_is_forged() -> None:
    assert sealer.open(f"{SDK_ID}.host-a.{'A' * 48}") is Shape.FORGED


def test_the_longest_address_still_fits_in_256_bytes() -> None:
    route = Route("unix:/" + "p" * 90, ROUTE.boot)
    sealed = sealer.seal(uuid.uuid4().hex, route, "a" * 16)

    assert len(sealed) <= MAX_ID_BYTES
    assert sealer.open(sealed) == route


def test_an_id_that_would_be_too_long_is_refused_when_sealing() -> None:
    with pytest.raises(ValueError, match="256"):
        sealer.seal("x" * 200, ROUTE, "a" * 16)


def test_a_bad_label_is_refused_when_sealing() -> None:
    with pytest.raises(ValueError, match="label"):
        sealer.seal(SDK_ID, ROUTE, "has.dot")


def test_two_sessions_of_one_worker_do_not_share_a_ciphertext() -> None:
    first = sealer.seal(uuid.uuid4().hex, ROUTE).rsplit(".", 1)[1]
    second = sealer.seal(uuid.uuid4().hex, ROUTE).rsplit(".", 1)[1]

    assert first != second


@settings(max_examples=300, deadline=None)
@given(
    sdk_id=st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=64),
    address=st.text(alphabet=string.ascii_letters + string.digits + ".:[]/-", min_size=1, max_size=60),
    boot=st.binary(min_size=8, max_size=8),
    label=st.one_of(st.none(), st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=16)),
)
def test_round_trip_for_any_route(sdk_id: str, address: str, boot: bytes, label: str | None) -> None:
    route = Route(address, boot)

    assert sealer.open(sealer.seal(sdk_id, route, label)) == route


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300))
def test_opening_never_raises_and_never_accepts_a_made_up_id(session_id: str) -> None:
    assert not isinstance(sealer.open(session_id), Route)
