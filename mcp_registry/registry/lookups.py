"""Stale-id lookups, the pure part: what an id was, a short memory of answers, and a rate limit.

The writer reads an id's live-session key and tombstone (`GET P:s:{H}`, `GET P:t:{H}`, one slot)
and asks `classify` what they say; answers are remembered for two seconds (a burst of one stale
id costs one round trip) and lookups are rate-limited (a flood of made-up ids costs Redis a
bounded rate; the rest are `unverified` and counted).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mcp_registry.outcomes import Status, classify_stored
from mcp_registry.registry import key_schema

CACHE_SIZE: Final = 4096
CACHE_SECONDS: Final = 2.0


def classify(
    live: object, tomb: object, *, seen_wall: float, worker: str
) -> tuple[Status, str | None, key_schema.Client | None]:
    """What an id seen by `worker` at `seen_wall` was, from its live key's and tombstone's values: its
    status, origin worker and client (when the registry knows them)."""
    owner, live_client = key_schema.parse_live(live) if isinstance(live, str) else (None, None)
    origin, ended_at, tomb_client = key_schema.parse_tombstone(tomb) if isinstance(tomb, str) else (None, None, None)
    status, found = classify_stored(owner, origin, ended_at, seen_wall=seen_wall, worker=worker)
    return status, found, live_client if owner is not None else tomb_client


class TokenBucket:
    """`rate` events per second with a burst of one second's worth."""

    def __init__(self, rate: float, monotonic: Callable[[], float]) -> None:
        self._rate = rate
        self._tokens = rate
        self._monotonic = monotonic
        self._last = monotonic()

    def take(self) -> bool:
        now = self._monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Known:
    """What Redis said about an id a moment ago: its live key's and its tombstone's values."""

    live: object
    tomb: object
    until: float


class AnswerCache:
    """The last `CACHE_SIZE` answers, each for `CACHE_SECONDS`."""

    def __init__(self) -> None:
        self._known: OrderedDict[str, Known] = OrderedDict()

    def get(self, h: str, now: float) -> Known | None:
        known = self._known.get(h)
        if known is None or known.until < now:
            return None
        return known

    def put(self, h: str, live: object, tomb: object, now: float) -> None:
        self._known[h] = Known(live, tomb, now + CACHE_SECONDS)
        self._known.move_to_end(h)
        while len(self._known) > CACHE_SIZE:
            self._known.popitem(last=False)
