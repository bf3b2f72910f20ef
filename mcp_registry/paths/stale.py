"""A request whose `mcp-session-id` this worker does not hold: stale, or malformed.

Read the body only when the decision needs it (a stateful POST under the `spec` policy: is it an
`initialize`?), decide, and apply: answer a DELETE here, strip the id, let the SDK answer 404, or
— continuity on, the id sealed by a live worker elsewhere — forward it to its owner. When the
owner is gone before anything reached it, the request is decided again, in the same place, as the
stale id it now is. Every request here gets the `mcp_registry.session.resolve` span.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_registry.binding import ManagerBinding
from mcp_registry.config import RegistryConfig
from mcp_registry.continuity.hop import HopResult
from mcp_registry.continuity.sealed_id import Route, Shape
from mcp_registry.decision import SESSION_HEADER, Request, SessionHeader, decide, needs_body, strip_session_header
from mcp_registry.outcomes import (
    OWNER_GONE_OUTCOME,
    Action,
    ForwardFailure,
    Status,
    adopt_reason,
    classify_hop,
    classify_sealed,
    takeover_answer,
)
from mcp_registry.paths.asgi import acknowledge_delete, error, read_body, replay
from mcp_registry.paths.opening import OpeningPath
from mcp_registry.runtime import WorkerRuntime
from mcp_registry.telemetry import ATTR_END_REASON, ATTR_FORWARD_FAILURE, ATTR_HOP_SECONDS, classification

if TYPE_CHECKING:
    from mcp_registry.continuity.node import ContinuityNode
    from mcp_registry.paths.takeover import TakeoverPath

NO_SESSION: Final = b"malformed-session-id"
"""The one id handed to the SDK for a malformed header it must reject: no session can have it."""


class StalePath:
    def __init__(
        self,
        app: ASGIApp,
        config: RegistryConfig,
        runtime: WorkerRuntime,
        binding: ManagerBinding,
        opening: OpeningPath,
        continuity: ContinuityNode | None,
        takeover: TakeoverPath | None = None,
    ) -> None:
        self._app = app
        self._config = config
        self._runtime = runtime
        self._binding = binding
        self._opening = opening
        self._continuity = continuity
        self._takeover = takeover

    async def __call__(
        self, header: SessionHeader, version: bytes | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        session_id = header.value  # None: malformed
        known, owner = self._sealed(session_id)
        if owner is not None and self._continuity is not None and session_id is not None:
            owner = self._continuity.successor(session_id) or owner  # adopted since it was sealed
        request = Request(
            method=scope["method"],
            header=header,
            owned=False,
            stateless=self._binding.view.stateless,
            policy=self._config.stale_policy,
            owner_elsewhere=owner is not None,
        )
        protocol_version = version.decode("latin-1") if version is not None else None
        action, receive = await self._decide(request, receive)
        started: int | None = None
        attributes: dict[str, AttributeValue] | None = None
        if action is Action.FORWARD:
            assert owner is not None
            assert session_id is not None
            assert self._continuity is not None
            started = time.time_ns()
            hop = await self._continuity.forward(owner, scope, receive, send)
            reason = adopt_reason(hop.failure) if hop.failure is not None else None
            if reason is None or hop.response_started:
                await self._hopped(hop, session_id, protocol_version, started, scope, send)
                return
            # The owner is gone (or going) and nothing reached it: adopt the session if takeover is on and the
            # request needs it; else answer here, as the table says for a stale id.
            assert hop.failure is not None
            self._runtime.stats.forward_failures[hop.failure.value] += 1
            receive = replay(hop.replay or [], receive)
            action, receive = await self._decide(replace(request, owner_elsewhere=False), receive)
            if self._takeover is not None and action is Action.REJECT:
                lost = await self._takeover(session_id, owner, reason, protocol_version, started, scope, receive, send)
                if lost is None:
                    return
                if takeover_answer(lost.failure) == 503:
                    await self._takeover.answer(lost, send)
                    return
            known, end_reason = OWNER_GONE_OUTCOME
            attributes = {ATTR_END_REASON: end_reason.value, ATTR_FORWARD_FAILURE: hop.failure.value}
        span = self._runtime.telemetry.start_resolve_span(
            method=scope["method"], action=action, protocol_version=protocol_version, start_time=started,
            attributes=attributes,
        )
        self._runtime.stale(session_id, action, span, known=known)
        await self._apply(action, session_id, scope, receive, send)

    def _sealed(self, session_id: str | None) -> tuple[Status | None, Route | None]:
        """What continuity's sealed id says in process: a classification, or the live owner elsewhere."""
        if self._continuity is None or session_id is None:
            return None, None
        found = self._continuity.owner_of(session_id)
        if isinstance(found, Route):
            mine = self._continuity.is_mine(found)
            return classify_sealed(forged=False, issued_here=mine), None if mine else found
        return classify_sealed(forged=found is Shape.FORGED, issued_here=False), None

    async def _decide(self, request: Request, receive: Receive) -> tuple[Action, Receive]:
        """The decision, reading (and replaying) the body only when it depends on it."""
        if not needs_body(request):
            return decide(request), receive
        messages, is_initialize = await read_body(receive, self._binding.view.max_body_bytes)
        return decide(request, is_initialize=is_initialize), replay(messages, receive)

    async def _apply(self, action: Action, session_id: str | None, scope: Scope, receive: Receive, send: Send) -> None:
        if action is Action.ACK_DELETE:
            await acknowledge_delete(send)
        elif action is Action.STRIP:
            scope = dict(scope)
            scope["headers"] = strip_session_header(scope["headers"])
            await self._opening(scope, receive, send)
        else:  # REJECT: the SDK answers 404 "Session not found"
            if session_id is None:
                # Two different values may start with a live id, which the SDK would serve: hand it
                # one value that no session can have (SDK ids are uuid4 hex).
                scope = dict(scope)
                scope["headers"] = [*strip_session_header(scope["headers"]), (SESSION_HEADER, NO_SESSION)]
            await self._app(scope, receive, send)

    async def _hopped(
        self, hop: HopResult, session_id: str, protocol_version: str | None, started: int, scope: Scope, send: Send
    ) -> None:
        """Count and trace a hop that reached the owner's listener; answer for one that failed before any answer."""
        stats = self._runtime.stats
        status = classify_hop(hop.failure)
        if hop.failure is None:
            stats.reuse[hop.owner or "unknown"] += 1
        else:
            stats.forward_failures[hop.failure.value] += 1
        stats.lookups[(status, Action.FORWARD)] += 1
        attributes = classification(
            status, id_hash=self._runtime.hasher.hash(session_id), origin=hop.owner,
            raw_id=session_id if self._config.record_raw_id else None,
        )
        if hop.headers_seconds is not None:
            attributes[ATTR_HOP_SECONDS] = hop.headers_seconds
        if hop.failure is not None:
            attributes[ATTR_FORWARD_FAILURE] = hop.failure.value
        self._runtime.telemetry.start_resolve_span(
            method=scope["method"], action=Action.FORWARD, protocol_version=protocol_version, start_time=started,
            attributes=attributes,
        ).end()
        if hop.failure is not None and not hop.response_started:
            timeout = hop.failure is ForwardFailure.TIMEOUT
            await error(send, 504 if timeout else 502, "The worker that owns this session did not answer in time"
                        if timeout else "The worker that owns this session failed")
