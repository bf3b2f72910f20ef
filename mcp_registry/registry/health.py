"""The writer's view of Redis: up, in back-off after a failure, or misconfigured for good.

No I/O: the writer reports each pass's outcome and asks what it may do. An outage is one
*episode*, logged once when it starts and once when it ends; the back-off doubles from 0.1 s to
5 s; after an episode the other workers get one session TTL to heart-beat again before anyone
reaps them (a failover cuts every worker off at once, and they do not all come back in the same
millisecond). A URL of the wrong topology is not an outage: it is said once, with its fix, and
the registry stays off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

logger = logging.getLogger("mcp_registry.registry.writer")

BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 5.0


class RedisHealth:
    def __init__(self, *, grace_seconds: float, monotonic: Callable[[], float]) -> None:
        self._grace = grace_seconds
        self._monotonic = monotonic
        self._backoff = 0.0
        self.backoff_until = 0.0
        """No Redis work before this (monotonic)."""
        self.down_since: float | None = None
        """When the current episode started; None while Redis answers."""
        self._dropped_at_down = 0
        self._reap_after = 0.0
        self.misconfigured: str | None = None
        """Why the registry is off for good (the URL names the wrong topology)."""

    def in_backoff(self, now: float) -> bool:
        return now < self.backoff_until

    def may_reap(self, now: float) -> bool:
        """Whether silent workers may be called lost now: Redis answers and no episode just ended."""
        return self.down_since is None and now >= self._reap_after

    def failed(self, error: BaseException | None, *, dropped: int) -> None:
        """A pass failed (`error` None: a bug of ours); `dropped` is the count of events dropped so far."""
        now = self._monotonic()
        self._backoff = min(BACKOFF_MAX, self._backoff * 2 or BACKOFF_FIRST)
        self.backoff_until = now + self._backoff
        if self.down_since is None:
            self.down_since = now
            self._dropped_at_down = dropped
            logger.warning(
                "mcp_registry: Redis is unavailable (%s); requests are unaffected, the registry buffers "
                "what it can and counts what it drops until Redis answers again",
                type(error).__name__ if error is not None else "internal error",
            )

    def succeeded(self, *, dropped: int) -> None:
        self._backoff = 0.0
        if self.down_since is not None:
            now = self._monotonic()
            self._reap_after = now + self._grace
            logger.warning(
                "mcp_registry: Redis is back after %.1fs; %d events were dropped meanwhile",
                now - self.down_since, dropped - self._dropped_at_down,
            )  # fmt: skip
            self.down_since = None

    def give_up(self, reason: str) -> None:
        self.misconfigured = reason
        logger.error("mcp_registry: the registry is off for this worker: %s; requests are unaffected", reason)
