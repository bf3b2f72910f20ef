"""What a generated deployment key looks like (the table of refusals is in tests/test_config.py)."""

from __future__ import annotations

import secrets

import pytest

from mcp_registry.key_strength import key_problem

MAKERS = {
    "token_urlsafe(32)": lambda: secrets.token_urlsafe(32).encode(),
    "token_hex(32)": lambda: secrets.token_hex(32).encode(),
    "token_bytes(32)": lambda: secrets.token_bytes(32),
    "token_urlsafe(64)": lambda: secrets.token_urlsafe(64).encode(),
}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_keys_made_as_the_readme_says_are_never_refused(kind: str) -> None:
    refused = [key for key in (MAKERS[kind]() for _ in range(5000)) if key_problem(key) is not None]
    assert refused == []


@pytest.mark.parametrize(
    "key", [b"abc.def" + b"x" * 40, "caf\u00e9".encode() * 12, b"   " + secrets.token_urlsafe(32).encode()]
)
def test_text_that_is_no_encoding_is_refused_as_text(key: bytes) -> None:
    assert key_problem(key, as_text=True) is not None
