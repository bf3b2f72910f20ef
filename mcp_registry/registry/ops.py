"""How the registry sends a pipeline: bounded in time, timed and counted per operation.

Every Redis command of the registry goes through `RedisOps.execute`, the background writer's
batches and, beside them, any awaited operation a request may one day need (takeover's atomic
claim): one place that bounds the wait, records the round trip and counts the failure. The
background parts call it from the writer's task; an awaited operation calls it from the request
that needs it, with the same bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from mcp_registry.telemetry import Telemetry


class RedisOps:
    """Runs pipelines with a bound of `max(1 s, 4 × redis_timeout)`, recording each round trip."""

    def __init__(
        self, telemetry: Telemetry, *, redis_timeout: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._telemetry = telemetry
        self._bound = max(1.0, 4 * redis_timeout)
        self._monotonic = monotonic

    async def execute(self, pipe: Any, operation: str, *, batch: int = 0) -> list[Any]:
        """Send `pipe`; its replies, or the client's error (or `TimeoutError` past the bound)."""
        started = self._monotonic()
        try:
            with anyio.fail_after(self._bound):
                replies: list[Any] = await pipe.execute()
        except BaseException:
            self._telemetry.redis_round_trip(operation, self._monotonic() - started, batch, failed=True)
            raise
        self._telemetry.redis_round_trip(operation, self._monotonic() - started, batch, failed=False)
        return replies
