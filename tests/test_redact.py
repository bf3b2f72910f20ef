"""The SDK's log lines never carry a raw session id once the middleware is installed."""

from __future__ import annotations

import logging

import pytest

from mcp_registry._redact import SessionIdRedactor

SECRET = "4f9c2d0be1a8473f9a6c3e5d7b2a1f00"


@pytest.mark.parametrize(
    ("template", "args"),
    [
        ("Created new transport with session ID: %s", (SECRET,)),
        ("Rejected request with unknown or expired session ID: %s", (SECRET,)),
        ("Session %s idle timeout", (SECRET,)),
        ("Session %s crashed", (SECRET,)),
        ("Terminating session: %s", (SECRET,)),
        ("Rejecting request for session %s: credential does not match the one that created the session", (SECRET,)),
    ],
)
def test_every_sdk_line_that_names_a_session_is_redacted(template: str, args: tuple[str, ...]) -> None:
    record = logging.LogRecord("mcp.server.streamable_http_manager", logging.INFO, __file__, 1, template, args, None)
    assert SessionIdRedactor(lambda sid: "HASHED" if sid == SECRET else None).filter(record)
    message = record.getMessage()
    assert SECRET not in message
    assert "<id_hash:HASHED>" in message


def test_without_a_key_the_id_is_still_removed() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "Terminating session: %s", (SECRET,), None)
    SessionIdRedactor(lambda _: None).filter(record)
    assert record.getMessage() == "Terminating session: <redacted>"


def test_prose_about_the_session_manager_is_left_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "StreamableHTTP session manager started", None, None)
    SessionIdRedactor(lambda _: "H").filter(record)
    assert record.getMessage() == "StreamableHTTP session manager started"


@pytest.mark.parametrize("made_up", ["with:colons:inside", "with", "a b c", "x" * 64])
def test_a_made_up_id_is_redacted_whole(made_up: str) -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "Rejected request with unknown or expired session ID: %s", (made_up,), None
    )
    SessionIdRedactor(lambda _: "H").filter(record)
    assert record.getMessage() == "Rejected request with unknown or expired session ID: <id_hash:H>"
