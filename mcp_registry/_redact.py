"""Keep raw session ids out of the SDK's log lines.

The SDK logs session ids in the clear at INFO ("Created new transport with session ID: …",
"Rejected request with unknown or expired session ID: …"). A session id is a bearer secret, so
the middleware installs this filter on the SDK's Streamable HTTP loggers: the id in each such
line becomes its keyed hash when the deployment's key is known, `<redacted>` otherwise.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Final

SDK_LOGGERS: Final = ("mcp.server.streamable_http_manager", "mcp.server.streamable_http")
# The SDK's lines that name a session (mcp 2.x). An id a client made up can hold any visible
# character, so where the id ends the line, everything to the end is the id.
_SESSION_LINES: Final = (
    re.compile(r"(?P<lead>session ID: )(?P<id>.+)$", re.DOTALL),
    re.compile(r"(?P<lead>Terminating session: )(?P<id>.+)$", re.DOTALL),
    re.compile(r"(?P<lead>^Session )(?P<id>.+?)(?= idle timeout$| crashed$)", re.DOTALL),
    re.compile(r"(?P<lead>request for session )(?P<id>.+?)(?=: credential does not match)", re.DOTALL),
)


class SessionIdRedactor(logging.Filter):
    def __init__(self, hash_id: Callable[[str], str | None]) -> None:
        super().__init__("mcp_registry.redact")
        self._hash_id = hash_id

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for pattern in _SESSION_LINES:
            redacted = pattern.sub(self._replace, redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True

    def _replace(self, match: re.Match[str]) -> str:
        h = self._hash_id(match["id"])
        return f"{match['lead']}<id_hash:{h}>" if h else f"{match['lead']}<redacted>"


def install(hash_id: Callable[[str], str | None]) -> None:
    """Install the redactor on the SDK's loggers, once per process."""
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SessionIdRedactor) for f in logger.filters):
            logger.addFilter(SessionIdRedactor(hash_id))
