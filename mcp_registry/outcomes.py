"""The outcome vocabulary, in one pure module: what can happen to a request and to a session.

Actions (what the middleware does), classifications (what an id turned out to be), protocol eras,
why a session ended, why a hop failed or was refused, why the registry dropped an event — and the
rules that classify, as pure functions tested by tables (`tests/test_outcomes.py`). No I/O, no
OpenTelemetry, no clock.

Telemetry, the registry and the audit render these values; none of them defines one. Adding a
class or an action is a change here, to its table, and to the places that show it (metrics,
the audit, the dashboard).
"""

from __future__ import annotations

from enum import StrEnum


class StalePolicy(StrEnum):
    """What a stateful worker does with a stale id on a request that is not an `initialize`."""

    SPEC = "spec"
    """Let the SDK answer 404, so that a spec client starts a new session."""
    STRIP = "strip"
    """Remove the id and let the SDK answer as for a request without one (LiteLLM's behaviour)."""


class Action(StrEnum):
    """What the middleware does with a request (`mcp_registry.session.action`)."""

    PASS = "pass"
    """Hand the request to the SDK unchanged."""
    STRIP = "strip"
    """Remove every `mcp-session-id` header, then hand the request to the SDK."""
    ACK_DELETE = "ack_delete"
    """Answer 200 here; the SDK never sees the request."""
    REJECT = "reject"
    """Hand the request to the SDK unchanged, which answers 404 "Session not found"."""
    FORWARD = "forward"
    """Stream the request to the worker that owns the session, and its answer back (continuity)."""
    ADOPT = "adopt"
    """Take over a session whose owner is gone: re-create it here under the same id, then serve the request
    (`MCP_SESSION_CONTINUITY=adopt`)."""


class Status(StrEnum):
    """What an id turned out to be (`mcp_registry.session.status`)."""

    LOCAL = "local"
    """This worker owns it."""
    CROSS_WORKER = "cross_worker"
    """Another live worker of this deployment issued it."""
    EXPIRED = "expired"
    """Issued by this deployment once, since ended or expired (a tombstone remembers it)."""
    FABRICATED = "fabricated"
    """Never issued within the retention window, or altered (its MAC does not hold)."""
    MALFORMED = "malformed"
    """Not an id at all: empty, too long, not visible ASCII, or two different values."""
    UNVERIFIED = "unverified"
    """Nobody could tell: the registry is off, or Redis did not answer in time."""
    MISSING = "missing"
    """No id at all on a request a stateful worker can only serve with one (not an `initialize`): a client
    or gateway that drops `mcp-session-id`. Not legitimate."""

    @property
    def legitimate(self) -> bool | None:
        """True if some worker of this deployment issued the id, None if nobody could tell."""
        if self is Status.UNVERIFIED:
            return None
        return self in (Status.LOCAL, Status.CROSS_WORKER, Status.EXPIRED)


class Era(StrEnum):
    """The protocol era of a Streamable HTTP request."""

    LEGACY = "legacy"
    """Revisions 2024-11-05 to 2025-11-25: the initialize handshake and `mcp-session-id`."""
    MODERN = "modern"
    """Revision 2026-07-28 and later: no protocol sessions."""


class EndReason(StrEnum):
    """Why a session ended (`mcp_registry.session.end_reason`)."""

    DELETED = "deleted"
    """The client sent DELETE and the SDK served it."""
    IDLE = "idle"
    """The SDK closed the session after its idle timeout."""
    SHUTDOWN = "shutdown"
    """The worker shut down while holding the session."""
    WORKER_LOST = "worker_lost"
    """The worker stopped refreshing (killed, crashed) and its sessions aged out by TTL."""
    HANDED_OVER = "handed_over"
    """The worker shut down and left the session to be adopted by another (`MCP_SESSION_CONTINUITY=adopt`):
    it moved, it was not lost."""


class ForwardFailure(StrEnum):
    """Why a hop did not end with the owner serving the request (`mcp_registry.forward.failure`)."""

    OWNER_GONE = "owner_gone"
    """The owner's listener is not there (worker killed, scaled down, restarted elsewhere)."""
    SESSION_GONE = "session_gone"
    """The owner is up but no longer holds the session (ended, idle, or a previous incarnation's)."""
    TIMEOUT = "timeout"
    """The owner did not answer within the forward timeout."""
    REFUSED = "refused"
    """The owner's listener refused the hop (e.g. the hosts' clocks are more than 30 s apart)."""
    BROKEN = "broken"
    """The connection failed after the owner had started to answer."""
    OWNER_DRAINING = "owner_draining"
    """The owner is shutting down and takes no new requests on its sessions: they are to be adopted."""
    NOT_ROUTED = "not_routed"
    """The owner holds the session but its app has no route for the request's path (answered 404 there):
    passed on to the client, never counted as served."""


class AdoptReason(StrEnum):
    """Why a worker took over a session (`mcp_registry.sessions.adopted`)."""

    OWNER_GONE = "owner_gone"
    """Its owner's listener is gone, or a new process listens at its address (a restart, a crash)."""
    OWNER_DRAINING = "owner_draining"
    """Its owner is shutting down (SIGTERM: a deploy, a scale-down) and handed it over."""


class TakeoverFailure(StrEnum):
    """Why a session whose owner is gone was not adopted (`mcp_registry.takeover.failures`)."""

    NOT_ADOPTABLE = "not_adoptable"
    """No handshake stored for it (opened before takeover was on, or its handshake never reached Redis, or
    the live key aged out): the client gets the spec's 404."""
    ENDED = "ended"
    """The session ended (DELETE, idle): never brought back."""
    PRINCIPAL_MISMATCH = "principal_mismatch"
    """The request's credential is not the one that opened the session: 404, as the SDK's own binding."""
    REGISTRY_UNAVAILABLE = "registry_unavailable"
    """Redis did not answer in time: 503 with Retry-After, so that the client's next try can adopt it."""
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    """Another worker holds the claim and did not finish in time: 503 with Retry-After."""
    REPLAY_FAILED = "replay_failed"
    """The SDK refused the replayed handshake (e.g. at its session limit): 503 with Retry-After."""


def takeover_answer(failure: TakeoverFailure) -> int:
    """The HTTP status a client gets when its session could not be adopted.

    404 (the spec's "start over") when the session cannot come back; 503 (retryable) when it could on a
    later try: no official client re-initializes after a 404, so a session that can still be saved is
    never answered with one.
    """
    permanent = (TakeoverFailure.NOT_ADOPTABLE, TakeoverFailure.ENDED, TakeoverFailure.PRINCIPAL_MISMATCH)
    return 404 if failure in permanent else 503


class Refusal(StrEnum):
    """Why the internal listener refused a request (the `reason` of its counter)."""

    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_TAG = "bad_tag"
    STALE = "stale"
    REPLAYED = "replayed"
    NOT_HERE = "not_here"
    """An authentic hop for another process: the owner it names is gone and a new one listens at its address
    (answered 410, so the forwarding worker knows the owner is gone at once)."""


class DropReason(StrEnum):
    """Why the registry could not record an event (`mcp_registry.drop.reason`)."""

    QUEUE_FULL = "queue_full"
    """The worker's queue was full when the request path submitted it."""
    RATE_LIMITED = "rate_limited"
    """Over the stale-id lookup rate limit."""
    BACKLOG_FULL = "backlog_full"
    """The pending backlog (Redis down) went over its bound."""
    SHUTDOWN = "shutdown"
    """The worker shut down before it could be written."""
    MISCONFIGURED = "misconfigured"
    """The registry URL names the wrong Redis topology: the registry is off for this worker."""


# --- the classification rules ----------------------------------------------------------------------


def classify_stored(
    live_owner: str | None,
    tomb_origin: str | None,
    tomb_ended_at: float | None,
    *,
    seen_wall: float,
    worker: str,
) -> tuple[Status, str | None]:
    """What an id seen by `worker` at `seen_wall` was, from what the registry stores: status and origin.

    `live_owner` is the worker its live-session key names; `tomb_origin` and `tomb_ended_at` are
    what its tombstone says (who issued it, when it ended). None: no such key.
    """
    if live_owner is not None:
        # Our own id that we no longer hold is one that ended a moment ago.
        return (Status.EXPIRED if live_owner == worker else Status.CROSS_WORKER), live_owner
    if tomb_origin is not None:
        # Ended after the request arrived: it was live on its origin when it was used here.
        if tomb_ended_at is not None and tomb_ended_at > seen_wall and tomb_origin != worker:
            return Status.CROSS_WORKER, tomb_origin
        return Status.EXPIRED, tomb_origin
    return Status.FABRICATED, None


def classify_sealed(*, forged: bool, issued_here: bool) -> Status | None:
    """What a sealed id (continuity) says in process, or None when the registry must be asked.

    Forged (shaped like our ids, but the MAC fails): fabricated. Issued by this worker, which no
    longer holds it: expired. Otherwise it names a live owner elsewhere, or is no sealed id at all.
    """
    if forged:
        return Status.FABRICATED
    if issued_here:
        return Status.EXPIRED
    return None


def adopt_reason(failure: ForwardFailure) -> AdoptReason | None:
    """Whether a failed hop means the session should be adopted here, and why."""
    if failure is ForwardFailure.OWNER_GONE:
        return AdoptReason.OWNER_GONE
    if failure is ForwardFailure.OWNER_DRAINING:
        return AdoptReason.OWNER_DRAINING
    return None


def classify_hop(failure: ForwardFailure | None) -> Status:
    """What a forwarded id was, from how the hop ended: its owner no longer holding it makes it expired."""
    return Status.EXPIRED if failure is ForwardFailure.SESSION_GONE else Status.CROSS_WORKER


OWNER_GONE_OUTCOME: tuple[Status, EndReason] = (Status.EXPIRED, EndReason.WORKER_LOST)
"""A forwarded id whose owner is gone before anything reached it: expired, its session lost with its worker."""


def is_lost(status: Status, action: Action) -> bool:
    """Whether a client lost a session here: it got the 404 for an id the deployment issued and still
    knows (ended, or live on a worker that cannot serve it here). The migration view counts these."""
    return action is Action.REJECT and status in (Status.EXPIRED, Status.CROSS_WORKER)


def classify_without_id(*, method: str, response_status: int | None, is_initialize: bool) -> Status | None:
    """A request with no id on a stateful worker: `missing` when it could only be served with one.

    `response_status` is the SDK's answer to a POST (None before it is known); any other method is
    missing its id outright. A POST that opened a session, or that is an `initialize`, is not.
    """
    if method != "POST":
        return Status.MISSING
    if response_status == 400 and not is_initialize:  # the SDK's "Missing session ID"
        return Status.MISSING
    return None
