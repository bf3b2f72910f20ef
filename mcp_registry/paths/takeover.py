"""Takeover: a request on a session whose owner is gone (`MCP_SESSION_CONTINUITY=adopt`).

The stale path comes here when a hop found the session's owner gone (its listener refused the
connection, or a new process listens at its address) or shutting down, and the request needs the
session (the decision table would let the SDK answer 404). One awaited Redis round trip claims the
session (`registry.takeover`); then exactly one of these happens:

- **adopt** — this worker holds the claim: it replays the stored `initialize` and
  `notifications/initialized` to its own SDK (not to the client) under the same id, checks that
  the request's credential is the one that opened the session, names itself the owner in the
  registry and serves the request; later requests reach it from any worker;
- **forward** — another worker adopted it (the registry names it): the request goes there, and
  this worker remembers where (one Redis read per session per worker after an owner change);
- **404** — it cannot come back: it ended (DELETE, idle), nothing was stored for it, or the
  credential differs (as the SDK's own binding answers);
- **503 with Retry-After** — it could come back on a later try: Redis did not answer, another
  worker's claim did not finish in time, or the SDK refused the replay.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import anyio
from opentelemetry.util.types import AttributeValue
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_registry.adoption import Adoption, OnAdopted
from mcp_registry.binding import ManagerBinding
from mcp_registry.config import RegistryConfig
from mcp_registry.continuity.handshake import INITIALIZED, Handshake
from mcp_registry.continuity.hop import HopResult
from mcp_registry.continuity.sealed_id import Route
from mcp_registry.decision import PROTOCOL_VERSION_HEADER, SESSION_HEADER
from mcp_registry.outcomes import (
    Action,
    AdoptReason,
    ForwardFailure,
    Status,
    TakeoverFailure,
    adopt_reason,
    takeover_answer,
)
from mcp_registry.paths.asgi import error, replay, response_session_id
from mcp_registry.paths.own import OwnSessionPath
from mcp_registry.registry.events import ClientInfo
from mcp_registry.registry.takeover import Claim
from mcp_registry.runtime import WorkerRuntime
from mcp_registry.telemetry import ATTR_ADOPT_REASON, ATTR_FORWARD_FAILURE, ATTR_TAKEOVER_FAILURE, classification

if TYPE_CHECKING:
    from mcp_registry.continuity.node import ContinuityNode

logger = logging.getLogger(__name__)

SUCCESSIONS: Final = 3
"""Owners followed for one request: the adopter of a session may itself be gone (a rolling deploy moves a
session from host to host), and is then taken over in turn."""
WAIT_FOR_ADOPTER_SECONDS: Final = 4.0
"""How long a worker that lost the claim waits for the winner to name itself (it usually takes milliseconds)."""
POLL_SECONDS: Final = 0.02
REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)
_REPLAYED_HEADERS: Final = frozenset(
    {SESSION_HEADER, PROTOCOL_VERSION_HEADER, b"content-length", b"content-type", b"accept", b"transfer-encoding"}
)


@dataclass(frozen=True, slots=True)
class Lost:
    """The session is not adopted here: why, and how the client is answered (404 via the SDK, or 503)."""

    failure: TakeoverFailure


class TakeoverPath:
    def __init__(
        self,
        app: ASGIApp,
        config: RegistryConfig,
        runtime: WorkerRuntime,
        binding: ManagerBinding,
        own: OwnSessionPath,
        continuity: ContinuityNode,
        on_adopted: OnAdopted | None = None,
    ) -> None:
        assert runtime.takeover is not None
        self._app = app
        self._config = config
        self._runtime = runtime
        self._store = runtime.takeover
        self._binding = binding
        self._own = own
        self._node = continuity
        self._on_adopted = on_adopted

    async def __call__(
        self, session_id: str, gone: Route, reason: AdoptReason, protocol_version: str | None, started: int,
        scope: Scope, receive: Receive, send: Send,
    ) -> Lost | None:
        """Adopt the session, or forward to its adopter, and serve the request; `Lost` if it cannot be."""
        h = self._runtime.hasher.hash(session_id)
        if h is None:
            return self._lost(TakeoverFailure.REGISTRY_UNAVAILABLE, session_id, protocol_version, started, scope)
        for _ in range(SUCCESSIONS):
            try:
                claim = await self._store.claim(h, self._config.worker_id)
                if not claim.acquired and not _moved(claim, gone):
                    claim = await self._wait_for_adopter(h, gone)
            except REDIS_ERRORS:
                return self._lost(TakeoverFailure.REGISTRY_UNAVAILABLE, session_id, protocol_version, started, scope)
            if claim.ended:
                return await self._give_up(
                    claim, h, TakeoverFailure.ENDED, session_id, protocol_version, started, scope
                )
            if not _moved(claim, gone):
                break
            successor = Route.from_text(claim.route or "")
            assert successor is not None
            if claim.acquired:
                await self._release(h)
            self._node.remember_successor(session_id, successor)
            hop = await self._node.forward(successor, scope, receive, send)
            if hop.failure is None or hop.response_started or (next_reason := adopt_reason(hop.failure)) is None:
                return self._forwarded(hop, session_id, protocol_version, started, scope)
            # Its adopter is gone (or going) too, before anything reached it: take the session over from it.
            self._node.forget_successor(session_id)
            gone, reason, receive = successor, next_reason, replay(hop.replay or [], receive)
        else:
            return self._lost(TakeoverFailure.CLAIMED_ELSEWHERE, session_id, protocol_version, started, scope)
        if not claim.acquired:
            return self._lost(TakeoverFailure.CLAIMED_ELSEWHERE, session_id, protocol_version, started, scope)
        handshake = Handshake.decode(claim.handshake) if claim.handshake is not None else None
        if handshake is None:
            return await self._give_up(
                claim, h, TakeoverFailure.NOT_ADOPTABLE, session_id, protocol_version, started, scope
            )
        route = self._node.route
        if route is None or self._node.draining:  # a worker that is shutting down does not adopt
            return await self._give_up(
                claim, h, TakeoverFailure.CLAIMED_ELSEWHERE, session_id, protocol_version, started, scope
            )
        try:
            failure = await self._adopt(session_id, handshake, scope)
        except Exception:  # the SDK failing the replay (e.g. its manager stopping) must not keep the claim
            logger.exception("mcp_registry: replaying a session's handshake failed")
            failure = TakeoverFailure.REPLAY_FAILED
        if failure is not None:
            return await self._give_up(claim, h, failure, session_id, protocol_version, started, scope)
        client = ClientInfo.from_initialize({"clientInfo": handshake.client_info})
        takeover = (route.text, claim.handshake or "")
        self._runtime.adopted(session_id, client, takeover, reason)
        # If this fails, the background writer records it moments later: others wait for it, or claim again.
        with contextlib.suppress(*REDIS_ERRORS):
            await self._store.publish(h, self._config.worker_id, (client.name, client.version), takeover)
        self._span(Status.CROSS_WORKER, Action.ADOPT, session_id, claim.owner, protocol_version, started, scope,
                   {ATTR_ADOPT_REASON: reason.value})  # fmt: skip
        if self._on_adopted is not None:
            await self._tell_app(Adoption(session_id, reason, claim.owner, handshake.protocol_version,
                                          client.name, client.version))  # fmt: skip
        await self._own(session_id, scope, receive, send)
        return None

    async def _tell_app(self, adoption: Adoption) -> None:
        """The application's `on_adopted` hook; what it raises is logged, never the client's problem."""
        assert self._on_adopted is not None
        try:
            result = self._on_adopted(adoption)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("mcp_registry: the application's on_adopted hook raised (the request is served)")

    # --- adopting ------------------------------------------------------------------------------------
    async def _adopt(self, session_id: str, handshake: Handshake, scope: Scope) -> TakeoverFailure | None:
        """Re-create the session in this worker's SDK under `session_id`, bound to the request's credential."""
        headers = [(n, v) for n, v in scope["headers"] if n.lower() not in _REPLAYED_HEADERS]
        json_headers = [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")]
        body = handshake.initialize_body()
        opening = {**scope, "method": "POST", "query_string": b"",
                   "headers": [*headers, *json_headers, (b"content-length", str(len(body)).encode())]}  # fmt: skip
        with self._node.adopting(session_id):
            status, opened = await _call(self._app, opening, body)
        if status != 200 or opened != session_id:
            if opened is not None:
                await self._binding.discard(opened)
            return TakeoverFailure.REPLAY_FAILED
        principal = self._binding.principal(session_id)
        if (self._runtime.hasher.hash(principal) if principal is not None else None) != handshake.principal:
            await self._binding.discard(session_id)
            return TakeoverFailure.PRINCIPAL_MISMATCH
        initialized = {**opening, "headers": [
            *headers, *json_headers, (b"content-length", str(len(INITIALIZED)).encode()),
            (SESSION_HEADER, session_id.encode()), (PROTOCOL_VERSION_HEADER, handshake.protocol_version.encode()),
        ]}  # fmt: skip
        status, _ = await _call(self._app, initialized, INITIALIZED)
        if status not in (200, 202):
            await self._binding.discard(session_id)
            return TakeoverFailure.REPLAY_FAILED
        return None

    async def _wait_for_adopter(self, h: str, gone: Route) -> Claim:
        """Another worker holds the claim: what the registry says once it names itself, or the claim itself
        when that worker gave it up or died (the claim expires); after the bound, a claim not acquired."""
        with anyio.move_on_after(WAIT_FOR_ADOPTER_SECONDS):
            while True:
                await anyio.sleep(POLL_SECONDS)
                claim = await self._store.claim(h, self._config.worker_id)
                if claim.acquired or claim.ended or _moved(claim, gone):
                    return claim
        return Claim(False, None, None, None, False)

    def _forwarded(
        self, hop: HopResult, session_id: str, protocol_version: str | None, started: int, scope: Scope
    ) -> Lost | None:
        """Account for a hop to the worker that adopted the session; `Lost` if it failed before any answer."""
        if hop.failure is None or hop.response_started:
            attributes: dict[str, AttributeValue] = {}
            if hop.failure is not None:
                self._runtime.stats.forward_failures[hop.failure.value] += 1
                attributes[ATTR_FORWARD_FAILURE] = hop.failure.value
            else:
                self._runtime.stats.reuse[hop.owner or "unknown"] += 1
            self._span(Status.CROSS_WORKER, Action.FORWARD, session_id, hop.owner, protocol_version, started,
                       scope, attributes)  # fmt: skip
            return None
        self._node.forget_successor(session_id)
        failure = (TakeoverFailure.CLAIMED_ELSEWHERE if hop.failure is not ForwardFailure.SESSION_GONE
                   else TakeoverFailure.ENDED)  # fmt: skip
        return self._lost(failure, session_id, protocol_version, started, scope)

    # --- failures ------------------------------------------------------------------------------------
    async def _give_up(
        self, claim: Claim, h: str, failure: TakeoverFailure, session_id: str, protocol_version: str | None,
        started: int, scope: Scope,
    ) -> Lost:
        if claim.acquired:
            await self._release(h)
        return self._lost(failure, session_id, protocol_version, started, scope)

    async def _release(self, h: str) -> None:
        with contextlib.suppress(*REDIS_ERRORS):  # else it expires by itself
            await self._store.release(h, self._config.worker_id)

    def _lost(
        self, failure: TakeoverFailure, session_id: str, protocol_version: str | None, started: int, scope: Scope
    ) -> Lost:
        """Count the failure; a retryable one gets its span here (a 404 gets the stale path's span)."""
        self._runtime.stats.takeover_failures[failure.value] += 1
        if takeover_answer(failure) == 503:
            self._span(Status.CROSS_WORKER, Action.ADOPT, session_id, None, protocol_version, started, scope,
                       {ATTR_TAKEOVER_FAILURE: failure.value})  # fmt: skip
        return Lost(failure)

    async def answer(self, lost: Lost, send: Send) -> None:
        """The retryable answer (503 with Retry-After); a 404 is the SDK's own, sent by the caller."""
        await error(send, 503, f"The session's owner is gone and it could not be taken over yet ({lost.failure}); "
                    "retry", headers=[(b"retry-after", b"1")])  # fmt: skip

    def _span(
        self, status: Status, action: Action, session_id: str, origin: str | None, protocol_version: str | None,
        started: int, scope: Scope, extra: dict[str, AttributeValue],
    ) -> None:
        attributes = classification(
            status, id_hash=self._runtime.hasher.hash(session_id), origin=origin,
            raw_id=session_id if self._config.record_raw_id else None,
        )
        attributes.update(extra)
        self._runtime.stats.lookups[(status, action)] += 1
        self._runtime.telemetry.start_resolve_span(
            method=scope["method"], action=action, protocol_version=protocol_version, start_time=started,
            attributes=attributes,
        ).end()


def _moved(claim: Claim, gone: Route) -> bool:
    """The registry names a live owner other than the one that is gone: the session was adopted."""
    if claim.route is None:
        return False
    successor = Route.from_text(claim.route)
    return successor is not None and successor.boot != gone.boot


async def _call(app: ASGIApp, scope: Scope, body: bytes) -> tuple[int, str | None]:
    """Send one request to `app` in process; its status and the session id it answered with."""
    sent = False
    done = anyio.Event()
    status = 0
    session_id: str | None = None

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, session_id
        if message["type"] == "http.response.start":
            status = message["status"]
            session_id = response_session_id(message)
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await app(scope, receive, send)
    done.set()
    return status, session_id


def takeover_fields(
    node: ContinuityNode, binding: ManagerBinding, runtime: WorkerRuntime
) -> Callable[[str, dict[str, object] | None], tuple[str, str] | None]:
    """What a session just opened stores for its takeover: this worker's route and its handshake (None: the
    session cannot be adopted — the listener is not up, or its `initialize` was too large to keep)."""

    def fields(session_id: str, params: dict[str, object] | None) -> tuple[str, str] | None:
        route = node.route
        if route is None:
            return None
        principal = binding.principal(session_id)
        handshake = Handshake.from_initialize(params, runtime.hasher.hash(principal) if principal else None)
        encoded = handshake.encode() if handshake is not None else None
        return (route.text, encoded) if encoded is not None else None

    return fields
