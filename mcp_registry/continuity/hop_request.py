"""What a hop carries of the client's request, so that its owner serves the request the client sent. Pure.

The forwarding worker encodes, from the ASGI scope it received, everything an application may read
that the hop itself would change: the path, the query string, the scheme, the client's and the
server's addresses, the root path and every header byte for byte (in order, repeats kept). The hop's
own HTTP request goes to a fixed path; nothing a client chose is in its URL. The owner's
listener puts them back into the scope it hands the application. The encoding is one header value
(`mcp-registry-hop-request`): JSON, ASCII only (bytes travel as latin-1 code points, escaped), and
the hop's tag covers it, so nothing in it can be changed or made up on the way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from starlette.types import Scope

HOP_REQUEST_HEADER: Final = b"mcp-registry-hop-request"
MAX_BYTES: Final = 256 * 1024
"""A larger encoding is refused (a front server's own header limits are far below it)."""
_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class HopRequest:
    path: str
    raw_path: bytes | None
    scheme: str
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    root_path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]

    def apply(self, scope: Scope) -> Scope:
        """The owner's scope: the listener's, with the client's request put back."""
        return {
            **scope,
            "path": self.path,
            "raw_path": self.raw_path,
            "scheme": self.scheme,
            "client": self.client,
            "server": self.server,
            "root_path": self.root_path,
            "query_string": self.query_string,
            "headers": self.headers,
        }


def encode(scope: Scope, *, drop: frozenset[bytes] = frozenset()) -> bytes:
    """The hop's encoding of the request in `scope`, without the headers named in `drop` (lower case)."""
    client, server = scope.get("client"), scope.get("server")
    raw_path = scope.get("raw_path")
    document = {
        "v": _VERSION,
        "path": scope["path"],
        "raw_path": raw_path.decode("latin-1") if raw_path is not None else None,
        "scheme": scope.get("scheme", "http"),
        "client": list(client) if client else None,
        "server": list(server) if server else None,
        "root_path": scope.get("root_path", ""),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, value in scope["headers"]
            if name.lower() not in drop
        ],
    }
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def decode(raw: bytes) -> HopRequest | None:
    """The request a hop carries, or None if `raw` is not one (never raises)."""
    if len(raw) > MAX_BYTES:
        return None
    try:
        document = json.loads(raw)
        return _parse(document) if isinstance(document, dict) and document.get("v") == _VERSION else None
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
        return None


def _parse(document: dict[str, Any]) -> HopRequest | None:
    path, raw_path = document.get("path"), document.get("raw_path")
    scheme, root_path, query = document.get("scheme"), document.get("root_path"), document.get("query")
    if not isinstance(path, str) or not (raw_path is None or isinstance(raw_path, str)):
        return None
    client, server, headers = document.get("client"), document.get("server"), document.get("headers")
    if not (isinstance(scheme, str) and isinstance(root_path, str) and isinstance(query, str)):
        return None
    if not isinstance(headers, list) or not all(
        isinstance(h, list) and len(h) == 2 and isinstance(h[0], str) and isinstance(h[1], str) for h in headers
    ):
        return None
    return HopRequest(
        path=path,
        raw_path=raw_path.encode("latin-1") if raw_path is not None else None,
        scheme=scheme,
        client=_client(client),
        server=_server(server),
        root_path=root_path,
        query_string=query.encode("latin-1"),
        headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
    )


def _client(value: object) -> tuple[str, int] | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and _is_port(value[1]):
        return value[0], value[1]
    return None


def _server(value: object) -> tuple[str, int | None] | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and (
        _is_port(value[1]) or value[1] is None
    ):
        return value[0], value[1]
    return None


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
