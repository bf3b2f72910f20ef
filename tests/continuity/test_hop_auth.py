"""The hop header: who may be served by an internal listener, and only once (pure; the clock is an argument)."""

from __future__ import annotations

import pytest

from mcp_registry.continuity.hop_auth import (
    HOP_HEADER,
    HOP_WORKER_HEADER,
    MAX_SKEW_SECONDS,
    WINDOW,
    HopSigner,
    HopVerifier,
)
from mcp_registry.outcomes import Refusal

KEY = b"deployment-key-0123456789abcdef"
NOW = 1_800_000_000.0
REQUEST = {"method": "POST", "path": "/mcp", "session_id": "abc.h.SEALED"}


def sign(signer: HopSigner, now: float = NOW) -> tuple[bytes, bytes]:
    headers = dict(signer.headers(**REQUEST, now=now))
    return headers[HOP_HEADER], headers[HOP_WORKER_HEADER]


Hop = tuple[bytes | None, bytes | None]


def verify(verifier: HopVerifier, hop: Hop, now: float = NOW, changed: dict[str, str] | None = None) -> object:
    request = {**REQUEST, **(changed or {})}
    return verifier.verify(
        hop[0], hop[1], method=request["method"], path=request["path"], session_id=request["session_id"], now=now
    )


@pytest.fixture
def signer() -> HopSigner:
    return HopSigner(KEY, boot=b"\x01" * 8, worker_id="host-a:101")


def test_a_signed_hop_verifies_and_names_its_sender(signer: HopSigner) -> None:
    assert verify(HopVerifier(KEY), sign(signer)) == "host-a:101"


def test_a_hop_is_accepted_once(signer: HopSigner) -> None:
    verifier, hop = HopVerifier(KEY), sign(signer)

    assert verify(verifier, hop) == "host-a:101"
    assert verify(verifier, hop) is Refusal.REPLAYED


def test_hops_that_arrive_out_of_order_are_each_accepted_once(signer: HopSigner) -> None:
    verifier = HopVerifier(KEY)
    hops = [sign(signer) for _ in range(50)]

    assert [verify(verifier, h) for h in reversed(hops)] == ["host-a:101"] * 50
    assert {verify(verifier, h) for h in hops} == {Refusal.REPLAYED}


def test_a_hop_older_than_the_window_is_refused(signer: HopSigner) -> None:
    verifier = HopVerifier(KEY)
    first = sign(signer)
    for _ in range(WINDOW):
        assert verify(verifier, sign(signer)) == "host-a:101"

    assert verify(verifier, first) is Refusal.REPLAYED


def test_two_senders_have_windows_of_their_own(signer: HopSigner) -> None:
    other = HopSigner(KEY, boot=b"\x02" * 8, worker_id="host-b:202")
    verifier = HopVerifier(KEY)

    assert verify(verifier, sign(signer)) == "host-a:101"
    assert verify(verifier, sign(other)) == "host-b:202"


@pytest.mark.parametrize("skew", [MAX_SKEW_SECONDS + 1, -(MAX_SKEW_SECONDS + 1)])
def test_a_hop_far_from_the_owner_s_clock_is_refused(signer: HopSigner, skew: float) -> None:
    assert verify(HopVerifier(KEY), sign(signer, now=NOW + skew)) is Refusal.STALE


@pytest.mark.parametrize(("field", "value"), [("method", "DELETE"), ("path", "/other"), ("session_id", "abc.h.OTHER")])
def test_a_hop_cannot_be_moved_to_another_request(signer: HopSigner, field: str, value: str) -> None:
    assert verify(HopVerifier(KEY), sign(signer), changed={field: value}) is Refusal.BAD_TAG


def test_a_hop_signed_with_another_key_is_refused(signer: HopSigner) -> None:
    assert verify(HopVerifier(b"another-deployment-key-000000000"), sign(signer)) is Refusal.BAD_TAG


def test_a_changed_sender_name_is_refused(signer: HopSigner) -> None:
    hop, _ = sign(signer)

    assert verify(HopVerifier(KEY), (hop, b"host-x:1")) is Refusal.BAD_TAG


@pytest.mark.parametrize("hop", [(None, b"w"), (b"v1.x", None), (None, None)])
def test_a_missing_header_is_missing(hop: tuple[bytes | None, bytes | None]) -> None:
    assert verify(HopVerifier(KEY), hop) is Refusal.MISSING


@pytest.mark.parametrize(
    "header", [b"", b"v1", b"v1.a.b.c.d", b"v2.00.1.1.x", b"v1.00.0.1.x", b"v1.00.-3.1.x", b"\xff"]
)
def test_a_malformed_header_is_malformed(header: bytes) -> None:
    assert verify(HopVerifier(KEY), (header, b"w")) is Refusal.MALFORMED


def test_every_single_byte_change_of_the_header_is_refused(signer: HopSigner) -> None:
    hop, worker = sign(signer)
    for position in range(len(hop)):
        changed = hop[:position] + bytes([hop[position] ^ 0x01]) + hop[position + 1:]
        assert isinstance(verify(HopVerifier(KEY), (changed, worker)), Refusal), position
