"""Authentication of a forwarded request (a hop). Pure: the clock is an argument.

The forwarding worker adds three headers; the owner's internal listener serves a request only if
they verify:

    mcp-registry-hop:          v2.<sender boot, hex>.<owner boot, hex>.<sequence>.<unix ms>.<tag>
    mcp-registry-hop-worker:   <sender worker id>
    mcp-registry-hop-request:  <the client's request: scheme, addresses, root path, query, headers>

`tag` is 128 bits of HMAC-SHA256, under a sub-key of the deployment key, over every field, the
worker id, the receiving listener's boot id (from the session's sealed route), the method and the
encoded request (`hop_request`: its path, query and headers, the session id among them): a hop cannot be moved
to another request, nor replayed to another owner. The owner's boot id is also in clear: an
authentic hop for a process that is gone (a new one listens at its address after a restart) is
told apart from a forged one (`NOT_HERE`, not `BAD_TAG`), so its sender learns at once that the
owner is gone. The hop is signed when its request is sent (after the client's first body bytes
arrived), so a slow upload is as fresh as any other hop.
A hop is accepted while its time is within `MAX_SKEW_SECONDS` of the owner's clock, and once:
each sender numbers its hops, and the owner keeps, per sender, a sliding window of the
sequence numbers it has seen (the anti-replay window of IPsec, RFC 4303 §3.4.3).
"""

from __future__ import annotations

import base64
import hmac
import itertools
from dataclasses import dataclass, field
from typing import Final

from mcp_registry.continuity.hop_request import HOP_REQUEST_HEADER
from mcp_registry.continuity.subkeys import derive
from mcp_registry.outcomes import Refusal

HOP_HEADER: Final = b"mcp-registry-hop"
HOP_WORKER_HEADER: Final = b"mcp-registry-hop-worker"
MAX_SKEW_SECONDS: Final = 30.0
"""How far a hop's time may be from the owner's clock (hosts' clocks included)."""
WINDOW: Final = 4096
"""Sequence numbers behind the highest seen that are still accepted (once each)."""
_TAG_BYTES: Final = 16
_WINDOW_MASK: Final = (1 << WINDOW) - 1
_VERSION: Final = "v2"
_BOOT_HEX: Final = 16
"""Characters of a boot id in hex (8 bytes: `sealed_id.BOOT_BYTES`)."""
_MAX_SEQUENCE_DIGITS: Final = 19
_MAX_MILLIS_DIGITS: Final = 15
_HEX_DIGITS: Final = frozenset("0123456789abcdef")




class HopSigner:
    """Signs this worker's hops; `boot` names this process, the sequence numbers its hops."""

    def __init__(self, key: bytes, *, boot: bytes, worker_id: str) -> None:
        self._key = derive(key, "continuity/hop")
        self._boot = boot.hex()
        self._worker = worker_id
        self._sequence = itertools.count(1)

    def headers(self, *, destination: bytes, method: str, request: bytes, now: float) -> list[tuple[bytes, bytes]]:
        """The hop headers of a request to the owner whose listener's boot id is `destination`."""
        fields = f"{_VERSION}.{self._boot}.{destination.hex()}.{next(self._sequence)}.{int(now * 1000)}"
        tag = _tag(self._key, fields, self._worker, method, request)
        return [
            (HOP_HEADER, f"{fields}.{tag}".encode()),
            (HOP_WORKER_HEADER, self._worker.encode("ascii")),
            (HOP_REQUEST_HEADER, request),
        ]


@dataclass(slots=True)
class _Window:
    highest: int = 0
    seen: int = 0
    """Bit i set: sequence number `highest - i` was accepted."""
    last_seen: float = 0.0


@dataclass(slots=True)
class HopVerifier:
    """Checks hops on the owner's side (the listener whose boot id is `boot`) and remembers what it accepted."""

    key: bytes
    boot: bytes
    _key: bytes = field(init=False)
    _windows: dict[str, _Window] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._key = derive(self.key, "continuity/hop")

    def verify(
        self, header: bytes | None, worker: bytes | None, request: bytes | None, *, method: str, now: float
    ) -> str | Refusal:
        """The sender's worker id if the hop verifies and was not seen before, else why not. Never raises."""
        if header is None or worker is None or request is None:
            return Refusal.MISSING
        parsed = _parse(header, worker)
        if parsed is None:
            return Refusal.MALFORMED
        fields, boot, destination, sequence, sent_at, tag, sender = parsed
        expected = _tag(self._key, fields, sender, method, request)
        if not hmac.compare_digest(tag.encode(), expected.encode()):
            return Refusal.BAD_TAG
        if destination != self.boot.hex():
            return Refusal.NOT_HERE  # authentic, for the process that listened here before this one
        if abs(now - sent_at) > MAX_SKEW_SECONDS:
            return Refusal.STALE
        if not self._accept(boot, sequence, now):
            return Refusal.REPLAYED
        return sender

    def _accept(self, boot: str, sequence: int, now: float) -> bool:
        window = self._windows.get(boot)
        if window is None:
            self._forget_quiet_senders(now)
            window = self._windows[boot] = _Window()
        window.last_seen = now
        if sequence > window.highest:
            shift = sequence - window.highest
            window.seen = ((window.seen << shift) | 1) & _WINDOW_MASK
            window.highest = sequence
            return True
        offset = window.highest - sequence
        if offset >= WINDOW or window.seen >> offset & 1:
            return False
        window.seen |= 1 << offset
        return True

    def _forget_quiet_senders(self, now: float) -> None:
        # A hop older than the skew bound is refused anyway: a sender quiet for longer needs no window.
        quiet = [boot for boot, w in self._windows.items() if now - w.last_seen > 2 * MAX_SKEW_SECONDS]
        for boot in quiet:
            del self._windows[boot]


def _parse(header: bytes, worker: bytes) -> tuple[str, str, str, int, float, str, str] | None:
    """The fields of a hop header, each checked for its shape and size before any number is made of it."""
    if len(header) > 160 or not header.isascii() or not worker.isascii() or len(worker) > 256:
        return None
    parts = header.decode("ascii").split(".")
    if len(parts) != 6:
        return None
    version, boot, destination, sequence_text, millis, tag = parts
    if (
        version != _VERSION
        or not all(len(b) == _BOOT_HEX and set(b) <= _HEX_DIGITS for b in (boot, destination))
        or not (sequence_text.isdigit() and len(sequence_text) <= _MAX_SEQUENCE_DIGITS)
        or not (millis.isdigit() and len(millis) <= _MAX_MILLIS_DIGITS)
    ):
        return None
    sequence = int(sequence_text)
    if sequence < 1:
        return None
    fields = f"{version}.{boot}.{destination}.{sequence_text}.{millis}"
    return fields, boot, destination, sequence, int(millis) / 1000, tag, worker.decode("ascii")


def _tag(key: bytes, fields: str, worker: str, method: str, request: bytes) -> str:
    text = "\x00".join((fields, worker, method)).encode("utf-8", "surrogateescape")
    digest = hmac.digest(key, text + b"\x00" + request, "sha256")[:_TAG_BYTES]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
