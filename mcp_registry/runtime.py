"""One worker's session bookkeeping: what the handler reports, where it goes, and the background tasks.

The handler calls `opened`, `closed` and `stale` from the request path; each is a few in-memory
operations and a non-blocking `submit` to the writer's queue. `running()` owns the background
work for the app's lifespan: the sweep that notices sessions the SDK ended on its own, and the
registry writer when the registry is on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
from opentelemetry import metrics, trace
from opentelemetry.trace import Span

from mcp_registry._sdk import ManagerView
from mcp_registry.config import Continuity, RegistryConfig
from mcp_registry.decision import UNKNOWN_CLIENT
from mcp_registry.outcomes import Action, AdoptReason, EndReason, Era, Status, is_lost
from mcp_registry.registry.events import Answer, ClientInfo, SessionClosed, SessionOpened, StaleSeen
from mcp_registry.registry.hasher import IdHasher
from mcp_registry.registry.takeover import TakeoverStore
from mcp_registry.registry.writer import RegistryWriter
from mcp_registry.sessions import OwnedSession, SessionBook
from mcp_registry.telemetry import RequestStats, Telemetry, annotate

logger = logging.getLogger(__name__)

SWEEP_SECONDS: Final = 1.0
"""How often the sessions the SDK ended by itself (idle timeout) are noticed."""
DRAIN_SECONDS: Final = 5.0
"""How long shutdown waits for the writer to record what is queued."""


def answer_on(span: Span, action: Action, stats: RequestStats, *, raw_id: str | None) -> Answer:
    """How a stale id's classification reaches the request's side: its span (then ended) and the counts."""

    def answer(status: Status, id_hash: str | None, origin: str | None, client: tuple[str, str] | None) -> None:
        annotate(span, status=status, id_hash=id_hash, origin=origin, raw_id=raw_id)
        span.end()
        stats.lookups[(status, action)] += 1
        if status is Status.CROSS_WORKER and origin is not None:
            stats.reuse[origin] += 1
        if is_lost(status, action):
            stats.count_client(stats.client_lost, client or UNKNOWN_CLIENT)

    return answer


class WorkerRuntime:
    def __init__(
        self,
        config: RegistryConfig,
        manager: ManagerView,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.config = config
        self.manager = manager
        self.book = SessionBook(manager.live)
        self.stats = RequestStats()
        self.hasher = IdHasher(config.hash_key)
        self.writer: RegistryWriter | None = None
        self.telemetry = Telemetry(
            worker_id=config.worker_id,
            stats=self.stats,
            live_sessions=lambda: len(self.book),
            queue_depth=lambda: self.writer.depth() if self.writer is not None else 0,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        if config.enabled:
            self.writer = RegistryWriter(
                config, live=self.book.ids, stats=self.stats, telemetry=self.telemetry, hasher=self.hasher
            )
        self.takeover: TakeoverStore | None = (
            TakeoverStore(config, self.telemetry) if config.continuity is Continuity.ADOPT else None
        )
        """The awaited claim a takeover needs (`MCP_SESSION_CONTINUITY=adopt`)."""
        self.started = False

    def bind(self, manager: ManagerView) -> None:
        """Follow a new session manager (an app that makes one per lifespan cycle); sessions of the
        old one are swept as ended by the SDK."""
        self.manager = manager
        self.book.rebind(manager.live)

    # --- called from the request path --------------------------------------------------------
    def opened(self, session_id: str, client: ClientInfo, takeover: tuple[str, str] | None = None) -> None:
        """A session opened here; `takeover` (route, handshake) when it can be adopted if this worker goes."""
        session = self.book.opened(session_id, (client.name, client.version))
        session.adoptable = takeover is not None
        self.telemetry.session_created()
        if self.writer is not None:
            self.writer.submit(SessionOpened(session_id, session.created_at, client, takeover))

    def adopted(self, session_id: str, client: ClientInfo, takeover: tuple[str, str], reason: AdoptReason) -> None:
        """A session taken over from a worker that is gone (its handshake replayed here under the same id)."""
        session = self.book.opened(session_id, (client.name, client.version))
        session.adoptable = True
        self.stats.adopted[reason.value] += 1
        if self.writer is not None:
            self.writer.submit(SessionOpened(session_id, session.created_at, client, takeover, adopted=True))

    def deleted(self, session_id: str) -> None:
        session = self.book.closed(session_id)
        if session is not None:
            self._ended(session, EndReason.DELETED)

    def stale(self, session_id: str | None, action: Action, span: Span, *, known: Status | None = None) -> None:
        """Classify an id this worker does not hold and end the span; `None` means malformed.

        `known` is a classification made in process (continuity's sealed ids): no Redis lookup then.
        """
        raw = session_id if session_id is not None and self.config.record_raw_id else None
        answer = answer_on(span, action, self.stats, raw_id=raw)
        if session_id is None:
            answer(Status.MALFORMED, None, None, None)
        elif known is not None:
            answer(known, self.hasher.hash(session_id), None, None)
        elif self.writer is not None and self.started:
            self.writer.submit(StaleSeen(session_id, action, answer, time.monotonic(), time.time()))
        else:
            answer(Status.UNVERIFIED, self.hasher.hash(session_id), None, None)

    def fold_client_counts(self) -> None:
        """Move the per-session request counts into the per-client ones (every second, off the hot path)."""
        stats = self.stats
        for session_id in list(stats.session_requests):
            session = self.book.get(session_id)
            self._fold(session_id, session.client if session is not None else UNKNOWN_CLIENT)

    def _fold(self, session_id: str, client: tuple[str, str]) -> None:
        stats = self.stats
        if requests := stats.session_requests.pop(session_id, 0):
            stats.count_client(stats.client_requests, (Era.LEGACY.value, *client), requests)
        if hops := stats.session_hops.pop(session_id, 0):
            stats.count_client(stats.client_hops, client, hops)

    def _ended(self, session: OwnedSession, reason: EndReason) -> None:
        self._fold(session.session_id, session.client)
        lifetime = self.book.lifetime(session)
        self.telemetry.session_ended(reason, lifetime)
        if self.writer is not None:
            self.writer.submit(SessionClosed(session.session_id, reason, lifetime, self.book.now()))

    # --- lifecycle -------------------------------------------------------------------------------
    def shutting_down(self) -> None:
        """The server is stopping: the sessions still held end now (recorded before the SDK drops them).

        With takeover on, a session whose handshake is stored is handed over, not ended: its live key stays
        for another worker to adopt it."""
        for session in self.book.close_all():
            self._ended(session, EndReason.HANDED_OVER if session.adoptable else EndReason.SHUTDOWN)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the background work; on exit, end held sessions and drain the queue within a bound."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._sweep_forever)
            writer_done = anyio.Event()
            if self.writer is not None:
                writer = self.writer

                async def run_writer() -> None:
                    try:
                        await writer.run()
                    finally:
                        writer_done.set()

                tg.start_soon(run_writer)
            self.started = True
            try:
                yield
            finally:
                self.started = False
                self.shutting_down()
                if self.writer is not None:
                    self.writer.close()
                    with anyio.move_on_after(DRAIN_SECONDS, shield=True) as scope:
                        await writer_done.wait()
                    if scope.cancelled_caught:
                        logger.warning("mcp_registry: the registry did not drain within %.0fs", DRAIN_SECONDS)
                if self.takeover is not None:
                    with anyio.CancelScope(shield=True):
                        await self.takeover.aclose()
                tg.cancel_scope.cancel()

    async def _sweep_forever(self) -> None:
        while True:
            await anyio.sleep(SWEEP_SECONDS)
            self.fold_client_counts()
            for session in self.book.sweep():
                self._ended(session, EndReason.IDLE)
