"""Session ids that name their owner, sealed with the deployment key. Pure: no I/O, no clock.

A sealed id is the SDK's own id, a host label in clear, and the owner's route, encrypted and
authenticated::

    <sdk id>.<label>.<sealed>        e.g.  3f9c…e1.host-a.AQx8…Q9

- `<sdk id>` is what the SDK generated (uuid4 hex: 128 random bits). It is the nonce of the
  encryption, so two sessions of one worker never share a keystream.
- `<label>` is `MCP_SESSION_ROUTE_LABEL` (empty when unset): the one part a balancer may read,
  to send a session to its host. It carries no address.
- `<sealed>` is canonical base64url (no padding) of `version ‖ ciphertext ‖ tag`:
  the plaintext is the owner's boot id (8 random bytes per worker process) and its advertised
  address, zero-padded so that the whole is a multiple of 3 bytes; the keystream is HMAC-SHA256
  blocks of the sdk id and a counter under one sub-key; the tag is 128 bits of HMAC-SHA256 over
  version, sdk id, label and ciphertext under another (encrypt-then-MAC).

So a client sees no address, any change to any byte fails the tag (or the shape), and every
worker that holds the deployment key can tell, in process, which worker owns a session — or
that nobody of this deployment ever issued it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

from mcp_registry.continuity.subkeys import derive

VERSION: Final = 1
BOOT_BYTES: Final = 8
TAG_BYTES: Final = 16
MAX_ID_BYTES: Final = 256
SEPARATOR: Final = "."
_LABEL: Final = re.compile(r"[A-Za-z0-9_-]{0,16}")
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
_MIN_SEALED_CHARS: Final = (1 + BOOT_BYTES + 1 + TAG_BYTES + 2) // 3 * 4


@dataclass(frozen=True, slots=True)
class Route:
    """Who owns a session: the worker process (`boot`) and where its internal listener is."""

    address: str
    boot: bytes

    @property
    def text(self) -> str:
        """`<address>#<boot, hex>`: how the registry records a session's owner (takeover)."""
        return f"{self.address}#{self.boot.hex()}"

    @classmethod
    def from_text(cls, text: str) -> Route | None:
        address, _, boot = text.rpartition("#")
        try:
            raw = bytes.fromhex(boot)
        except ValueError:
            return None
        return cls(address, raw) if address and len(raw) == BOOT_BYTES else None


class Shape(Enum):
    PLAIN = "plain"
    """Not a sealed id (an SDK id from a worker without continuity, or made up in some other shape)."""
    FORGED = "forged"
    """Shaped like a sealed id, but the tag does not verify: nobody holding the key made it."""


class SessionIdSealer:
    """Seal and open session ids under one deployment key."""

    def __init__(self, key: bytes) -> None:
        self._enc_key = derive(key, "continuity/route-encryption")
        self._mac_key = derive(key, "continuity/route-mac")

    def seal(self, sdk_id: str, route: Route, label: str | None = None) -> str:
        """The id the client gets for the SDK's `sdk_id`, naming `route` as its owner."""
        label = label or ""
        if not _LABEL.fullmatch(label):
            raise ValueError(f"a route label is 0-16 letters, digits, '-' or '_'; got {label!r}")
        if len(route.boot) != BOOT_BYTES:
            raise ValueError(f"a boot id is {BOOT_BYTES} bytes")
        plain = route.boot + route.address.encode()
        plain += b"\x00" * (-(1 + len(plain) + TAG_BYTES) % 3)
        cipher = _xor(plain, self._keystream(sdk_id, len(plain)))
        raw = bytes([VERSION]) + cipher + self._tag(sdk_id, label, cipher)
        sealed = f"{sdk_id}{SEPARATOR}{label}{SEPARATOR}{base64.urlsafe_b64encode(raw).decode('ascii')}"
        if len(sealed) > MAX_ID_BYTES:
            raise ValueError(f"a sealed session id would be {len(sealed)} bytes; the limit is {MAX_ID_BYTES}")
        return sealed

    def open(self, session_id: str) -> Route | Shape:
        """The route inside `session_id`; `Shape.PLAIN` if it is not sealed, `Shape.FORGED` if it fails."""
        sdk_id, sep1, rest = session_id.rpartition(SEPARATOR)
        sdk_id, sep2, label = sdk_id.rpartition(SEPARATOR)
        if not (sep1 and sep2 and sdk_id) or len(rest) < _MIN_SEALED_CHARS or len(rest) % 4:
            return Shape.PLAIN
        if not _B64URL.fullmatch(rest) or not _LABEL.fullmatch(label):
            return Shape.PLAIN
        try:
            raw = base64.urlsafe_b64decode(rest)
        except (binascii.Error, ValueError):
            return Shape.FORGED
        cipher, tag = raw[1:-TAG_BYTES], raw[-TAG_BYTES:]
        if raw[0] != VERSION or not hmac.compare_digest(tag, self._tag(sdk_id, label, cipher)):
            return Shape.FORGED
        plain = _xor(cipher, self._keystream(sdk_id, len(cipher))).rstrip(b"\x00")
        try:
            address = plain[BOOT_BYTES:].decode()
        except UnicodeDecodeError:  # pragma: no cover - only a key holder can make this
            return Shape.FORGED
        return Route(address, plain[:BOOT_BYTES])

    def _keystream(self, sdk_id: str, length: int) -> bytes:
        nonce = sdk_id.encode("ascii", "surrogateescape")
        blocks = []
        for counter in range((length + 31) // 32):
            blocks.append(hmac.digest(self._enc_key, nonce + counter.to_bytes(4, "big"), "sha256"))
        return b"".join(blocks)[:length]

    def _tag(self, sdk_id: str, label: str, cipher: bytes) -> bytes:
        nonce = sdk_id.encode("ascii", "surrogateescape")
        message = bytes([VERSION]) + len(nonce).to_bytes(2, "big") + nonce + label.encode() + b"\x00" + cipher
        return hmac.digest(self._mac_key, message, "sha256")[:TAG_BYTES]


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")
