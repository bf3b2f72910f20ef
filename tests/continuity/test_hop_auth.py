"""The hop headers: who may be served by which internal listener, and only once (pure; the clock is an argument)."""

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
from mcp_registry.continuity.hop_request import HOP_REQUEST_HEADER
from mcp_registry.outcomes import Refusal

KEY = b"zA5xUU99auE3D_1nHCXSxJ_BVGeJSwxE-uyKt7cJOGA"
NOW = 1_800_000_000.0
OWNER = b"\x0a" * 8
"""The boot id of the listener the hops are for (sealed into the session's id)."""
REQUEST: dict[str, str | bytes] = {
    "method": "POST", "request": b'{"v":1,"path":"/mcp","headers":[["mcp-session-id","abc.h.SEALED"]]}'
}


def sign(signer: HopSigner, now: float = NOW, destination: bytes = OWNER) -> tuple[bytes, bytes, bytes]:
    headers = dict(signer.headers(destination=destination, **REQUEST, now=now))  # type: ignore[arg-type]
    return headers[HOP_HEADER], headers[HOP_WORKER_HEADER], headers[HOP_REQUEST_HEADER]


Hop = tuple[bytes | None, bytes | None, bytes | None]


def verify(verifier: HopVerifier, hop: Hop, now: float = NOW, changed: dict[str, str | bytes] | None = None) -> object:
    request = {**REQUEST, **(changed or {})}
    carried = request["request"] if changed and "request" in changed else hop[2]
    assert carried is None or isinstance(carried, bytes)
    assert isinstance(request["method"], str)
    return verifier.verify(hop[0], hop[1], carried, method=request["method"], now=now)


def owner(key: bytes = KEY, boot: bytes = OWNER) -> HopVerifier:
    return HopVerifier(key, boot)


@pytest.fixture
def signer() -> HopSigner:
    return HopSigner(KEY, boot=b"\x01" * 8, worker_id="host-a:101")


def test_a_signed_hop_verifies_and_names_its_sender(signer: HopSigner) -> None:
    assert verify(owner(), sign(signer)) == "host-a:101"


def test_a_hop_is_accepted_once(signer: HopSigner) -> None:
    verifier, hop = owner(), sign(signer)

    assert verify(verifier, hop) == "host-a:101"
    assert verify(verifier, hop) is Refusal.REPLAYED


def test_hops_that_arrive_out_of_order_are_each_accepted_once(signer: HopSigner) -> None:
    verifier = owner()
    hops = [sign(signer) for _ in range(50)]

    assert [verify(verifier, h) for h in reversed(hops)] == ["host-a:101"] * 50
    assert {verify(verifier, h) for h in hops} == {Refusal.REPLAYED}


def test_a_hop_older_than_the_window_is_refused(signer: HopSigner) -> None:
    verifier = owner()
    first = sign(signer)
    for _ in range(WINDOW):
        assert verify(verifier, sign(signer)) == "host-a:101"

    assert verify(verifier, first) is Refusal.REPLAYED


def test_two_senders_have_windows_of_their_own(signer: HopSigner) -> None:
    other = HopSigner(KEY, boot=b"\x02" * 8, worker_id="host-b:202")
    verifier = owner()

    assert verify(verifier, sign(signer)) == "host-a:101"
    assert verify(verifier, sign(other)) == "host-b:202"


@pytest.mark.parametrize("skew", [MAX_SKEW_SECONDS + 1, -(MAX_SKEW_SECONDS + 1)])
def test_a_hop_far_from_the_owner_s_clock_is_refused(signer: HopSigner, skew: float) -> None:
    assert verify(owner(), sign(signer, now=NOW + skew)) is Refusal.STALE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "DELETE"),
        ("request", b'{"v":1,"path":"/other","headers":[["mcp-session-id","abc.h.SEALED"]]}'),  # another path
        ("request", b'{"v":1,"path":"/mcp","headers":[["mcp-session-id","abc.h.OTHER"]]}'),  # another session
        ("request", b'{"v":1,"path":"/mcp","headers":[["mcp-session-id","abc.h.SEALED"],["x-real-ip","6.6.6.6"]]}'),
    ],
)
def test_a_hop_cannot_be_moved_to_another_request(signer: HopSigner, field: str, value: str) -> None:
    assert verify(owner(), sign(signer), changed={field: value}) is Refusal.BAD_TAG


def test_a_hop_signed_with_another_key_is_refused(signer: HopSigner) -> None:
    assert verify(owner(b"pB4n1UQ8F0a7w2xR9eV3kJmZ5tYcHdLsGqNiAoXuWjE"), sign(signer)) is Refusal.BAD_TAG


def test_a_changed_sender_name_is_refused(signer: HopSigner) -> None:
    hop, _, request = sign(signer)

    assert verify(owner(), (hop, b"host-x:1", request)) is Refusal.BAD_TAG


def test_a_hop_replayed_to_another_owner_is_refused(signer: HopSigner) -> None:
    """A captured hop sent to a listener other than the one its session names (finding 2)."""
    hop = sign(signer, destination=OWNER)
    other = b"\x0b" * 8

    assert verify(owner(boot=other), hop) is Refusal.NOT_HERE
    retargeted = hop[0].replace(OWNER.hex().encode(), other.hex().encode()), hop[1], hop[2]
    assert verify(owner(boot=other), retargeted) is Refusal.BAD_TAG, "the owner's boot id is under the tag"
    assert verify(owner(boot=OWNER), hop) == "host-a:101"


def test_an_authentic_hop_for_a_process_that_is_gone_says_so() -> None:
    """A new process at the owner's address (a restart) tells the sender at once that its owner is gone."""
    signer = HopSigner(KEY, boot=b"\x01" * 8, worker_id="host-a:101")
    forged = HopSigner(b"pB4n1UQ8F0a7w2xR9eV3kJmZ5tYcHdLsGqNiAoXuWjE", boot=b"\x01" * 8, worker_id="host-a:101")
    restarted = owner(boot=b"\x0c" * 8)

    assert verify(restarted, sign(signer)) is Refusal.NOT_HERE
    assert verify(restarted, sign(forged)) is Refusal.BAD_TAG, "only the deployment's workers learn that"


@pytest.mark.parametrize(
    "hop", [(None, b"w", b"{}"), (b"v2.x", None, b"{}"), (b"v2.x", b"w", None), (None, None, None)]
)
def test_a_missing_header_is_missing(hop: Hop) -> None:
    assert verify(owner(), hop) is Refusal.MISSING


BOOT = "01" * 8 + "." + "0a" * 8
TAG = "A" * 22


@pytest.mark.parametrize(
    "header",
    [
        b"", b"v2", b"v2.a.b.c.d.e", b"v1.0101010101010101.0a0a0a0a0a0a0a0a.1.1.x", f"v2.{BOOT}.0.1.{TAG}".encode(),
        f"v2.{BOOT}.-3.1.{TAG}".encode(), b"\xff", f"v2.{BOOT[:-1]}.1.1.{TAG}".encode(),
        f"v2.{BOOT[:-1]}g.1.1.{TAG}".encode(), f"v2.{BOOT}.1.1.{TAG}.extra".encode(),
        f"v2.{'01' * 8}.1.1.{TAG}".encode(),  # the owner's boot id left out
        # numbers too large for a float or an int (finding 3: the listener answered 500 with a traceback)
        f"v2.{BOOT}.1.{'9' * 400}.{TAG}".encode(), f"v2.{BOOT}.{'9' * 400}.1.{TAG}".encode(),
        f"v2.{BOOT}.1.{'9' * 5000}.{TAG}".encode(), f"v2.{BOOT}.1.1e308.{TAG}".encode(),
        f"v2.{BOOT}.1.{'1' * 20}.{TAG}".encode(), f"v2.{BOOT}.١٢.1.{TAG}".encode(),
    ],
)  # fmt: skip
def test_a_malformed_header_is_malformed_and_never_raises(header: bytes) -> None:
    assert verify(owner(), (header, b"w", b"{}")) is Refusal.MALFORMED


def test_a_non_ascii_sender_name_is_malformed(signer: HopSigner) -> None:
    hop, _, request = sign(signer)

    assert verify(owner(), (hop, "caf\u00e9".encode(), request)) is Refusal.MALFORMED


def test_every_single_byte_change_of_the_header_is_refused(signer: HopSigner) -> None:
    hop, worker, request = sign(signer)
    for position in range(len(hop)):
        changed = hop[:position] + bytes([hop[position] ^ 0x01]) + hop[position + 1:]
        assert isinstance(verify(owner(), (changed, worker, request)), Refusal), position
