"""What re-creating a session needs, stored once per session (takeover). Pure.

When a session opens, its `initialize` said the protocol version the client asked for, its
capabilities and its `clientInfo`; the SDK bound the session to the principal that opened it.
`Handshake` keeps those (the principal as a keyed hash: never a token, never a raw id), encoded
compactly into the session's live key. A worker adopting the session replays `initialize` and
`notifications/initialized` from it to its own SDK — not to the client — under the same id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

MAX_ENCODED_BYTES: Final = 1024
"""A larger handshake (capabilities are the client's own JSON) is not stored: that session cannot be adopted."""
REPLAY_ID: Final = "mcp-registry-adopt"
"""The JSON-RPC id of a replayed `initialize` (its answer goes nowhere)."""
INITIALIZED: Final = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


@dataclass(frozen=True, slots=True)
class Handshake:
    protocol_version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any]
    principal: str | None
    """The keyed hash of the principal that opened the session (None: it opened without credentials)."""

    @classmethod
    def from_initialize(cls, params: dict[str, object] | None, principal: str | None) -> Handshake | None:
        """From an `initialize` request's params; None if they lack what a replay needs."""
        if not params:
            return None
        version, capabilities = params.get("protocolVersion"), params.get("capabilities")
        info = params.get("clientInfo")
        if not (isinstance(version, str) and isinstance(capabilities, dict) and isinstance(info, dict)):
            return None
        return cls(version, capabilities, info, principal)

    def encode(self) -> str | None:
        """Compact JSON (ASCII), or None when over `MAX_ENCODED_BYTES`."""
        document = {"v": self.protocol_version, "c": self.capabilities, "i": self.client_info, "p": self.principal}
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=True)
        return text if len(text) <= MAX_ENCODED_BYTES else None

    @classmethod
    def decode(cls, text: str) -> Handshake | None:
        """What `encode` wrote, or None if `text` is not that (never raises)."""
        if len(text) > MAX_ENCODED_BYTES:
            return None
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(document, dict):
            return None
        principal = document.get("p")
        params = {"protocolVersion": document.get("v"), "capabilities": document.get("c"),
                  "clientInfo": document.get("i")}  # fmt: skip
        if principal is not None and not isinstance(principal, str):
            return None
        return cls.from_initialize(params, principal)

    def initialize_body(self) -> bytes:
        """The `initialize` request to replay."""
        params = {"protocolVersion": self.protocol_version, "capabilities": self.capabilities,
                  "clientInfo": self.client_info}  # fmt: skip
        return json.dumps({"jsonrpc": "2.0", "id": REPLAY_ID, "method": "initialize", "params": params}).encode()
