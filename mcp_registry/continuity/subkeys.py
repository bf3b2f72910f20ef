"""Sub-keys of the deployment key, one per purpose, so that no two uses share a key."""

from __future__ import annotations

import hmac


def derive(key: bytes, purpose: str) -> bytes:
    """HMAC-SHA256 of the purpose under the deployment key (an HKDF-Expand of one block)."""
    return hmac.digest(key, b"mcp_registry/" + purpose.encode() + b"\x01", "sha256")
