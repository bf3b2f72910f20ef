"""Is a deployment key strong enough? Pure.

Every sealed session id a client receives is an offline oracle for the deployment key
(`MCP_SESSION_REGISTRY_HASH_KEY`): a guessable key lets a client seal any route. So the key must
be generated: at least 32 random bytes, given as url-safe base64 (what
`python -c "import secrets; print(secrets.token_urlsafe(32))"` prints) or hex
(`secrets.token_hex(32)`); in code, as those characters or as ≥ 32 raw random bytes.

What a generated key looks like is checked, not only its length: a key that decodes to fewer than
32 bytes, or whose characters are too few, too repetitive or too ordered to have come from a
random generator (a pass phrase, a word repeated, `0123456789abcdef…`), is refused. The bounds
sit far below what a real generator produces: measured over 200 000 keys each, `token_urlsafe(32)`
never had fewer than 22 distinct characters or 4.2 bits of character entropy, `token_hex(32)` never
fewer than 12 distinct digits or 3.3 bits.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Final

MIN_BYTES: Final = 32
GENERATE_KEY: Final = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def key_problem(key: bytes, *, as_text: bool = False) -> str | None:
    """Why `key` is not a generated deployment key (a reason to print after the variable's name), or None.

    `as_text`: the key came as text (an environment variable), so it must be the encoded form.
    """
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if as_text and (text is None or not text.isprintable()):
        return "must be url-safe base64 or hex characters"
    if text is None or not text.isprintable():
        # Raw bytes (given in code): long enough, and not a pattern.
        if len(key) < MIN_BYTES:
            return f"must be at least {MIN_BYTES} random bytes; got {len(key)}"
        if len(set(key)) < 16:
            return f"does not look random: {len(set(key))} distinct bytes in {len(key)}"
        return None
    if _HEX.fullmatch(text) and (len(text) >= 2 * MIN_BYTES or text.islower() or text.isupper()):
        # Hex (what a one-case run of hex digits is taken for): two digits a byte.
        if len(text) < 2 * MIN_BYTES:
            return f"must be at least {2 * MIN_BYTES} hex digits ({MIN_BYTES} random bytes); got {len(text)}"
        return _pattern_problem(text, distinct=12, bits=3.3, run=8)
    if _BASE64URL.fullmatch(text):
        decoded = len(text.rstrip("=")) * 6 // 8
        if decoded < MIN_BYTES:
            return f"must encode at least {MIN_BYTES} random bytes; it encodes {decoded}"
        if not (any(c.isupper() for c in text) and any(c.islower() for c in text)):
            return "does not look random: a generated url-safe base64 key mixes upper and lower case"
        return _pattern_problem(text, distinct=20, bits=4.0, run=6)
    return "must be url-safe base64 or hex characters"


def _pattern_problem(text: str, *, distinct: int, bits: float, run: int) -> str | None:
    """Too few characters, too little entropy, or `run` characters in a row stepping evenly (`aaaa…`,
    `0123…`, `fedc…`): none of these comes from a generator (the run bounds make a false refusal
    rarer than one in a million keys)."""
    counts = Counter(text)
    if len(counts) < distinct:
        return f"does not look random: only {len(counts)} distinct characters"
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    if entropy < bits:
        return f"does not look random: {entropy:.1f} bits of entropy per character"
    length, step = 1, None
    for i in range(1, len(text)):
        delta = ord(text[i]) - ord(text[i - 1])
        length, step = (length + 1, delta) if delta == step and abs(delta) <= 1 else (2, delta)
        if length >= run:
            return f"does not look random: it holds the run {text[i - run + 1 : i + 1]!r}"
    return None
