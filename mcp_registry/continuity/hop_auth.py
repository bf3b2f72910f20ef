"""Authentication of a forwarded request (a hop). Pure: the clock is an argument.

The forwarding worker adds two headers; the owner's internal listener serves a request only if
they verify:

    mcp-registry-hop:         v1.<sender boot, hex>.<sequence>.<unix ms>.<tag>
    mcp-registry-hop-worker:  <sender worker id>

`tag` is 128 bits of HMAC-SHA256, under a sub-key of the deployment key, over every field, the
worker id, the method, the path and the session id: a hop cannot be moved to another request.
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




class HopSigner:
    """Signs this worker's hops; `boot` names this process, the sequence numbers its hops."""

    def __init__(self, key: bytes, *, boot: bytes, worker_id: str) -> None:
        self._key = derive(key, "continuity/hop")
        self._boot = boot.hex()
        self._worker = worker_id
        self._sequence = itertools.count(1)

    def headers(self, *, method: str, path: str, session_id: str, now: float) -> list[tuple[bytes, bytes]]:
        fields = f"v1.{self._boot}.{next(self._sequence)}.{int(now * 1000)}"
        tag = _tag(self._key, fields, self._worker, method, path, session_id)
        return [(HOP_HEADER, f"{fields}.{tag}".encode()), (HOP_WORKER_HEADER, self._worker.encode())]


@dataclass(slots=True)
class _Window:
    highest: int = 0
    seen: int = 0
    """Bit i set: sequence number `highest - i` was accepted."""
    last_seen: float = 0.0


@dataclass(slots=True)
class HopVerifier:
    """Checks hops on the owner's side and remembers what it accepted."""

    key: bytes
    _key: bytes = field(init=False)
    _windows: dict[str, _Window] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._key = derive(self.key, "continuity/hop")

    def verify(
        self, header: bytes | None, worker: bytes | None, *, method: str, path: str, session_id: str, now: float
    ) -> str | Refusal:
        """The sender's worker id if the hop verifies and was not seen before, else why not."""
        if header is None or worker is None:
            return Refusal.MISSING
        try:
            text, sender = header.decode("ascii"), worker.decode("utf-8")
            version, boot, sequence_text, millis, tag = text.split(".")
            sequence, sent_at = int(sequence_text), int(millis) / 1000
        except (UnicodeDecodeError, ValueError):
            return Refusal.MALFORMED
        if version != "v1" or sequence < 1:
            return Refusal.MALFORMED
        expected = _tag(self._key, f"{version}.{boot}.{sequence_text}.{millis}", sender, method, path, session_id)
        if not hmac.compare_digest(tag.encode(), expected.encode()):
            return Refusal.BAD_TAG
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


def _tag(key: bytes, fields: str, worker: str, method: str, path: str, session_id: str) -> str:
    message = "\x00".join((fields, worker, method, path, session_id)).encode("utf-8", "surrogateescape")
    digest = hmac.digest(key, message, "sha256")[:_TAG_BYTES]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
