"""The outcome vocabulary's rules, as tables: what an id was, from what is known about it."""

from __future__ import annotations

import pytest

from mcp_registry.outcomes import (
    OWNER_GONE_OUTCOME,
    Action,
    EndReason,
    ForwardFailure,
    Status,
    classify_hop,
    classify_sealed,
    classify_stored,
    classify_without_id,
    is_lost,
)

SEEN = 1_000.0


@pytest.mark.parametrize(
    ("status", "legitimate"),
    [
        (Status.LOCAL, True),
        (Status.CROSS_WORKER, True),
        (Status.EXPIRED, True),
        (Status.FABRICATED, False),
        (Status.MALFORMED, False),
        (Status.MISSING, False),
        (Status.UNVERIFIED, None),
    ],
)
def test_legitimate_ids_are_the_ones_the_deployment_issued(status: Status, legitimate: bool | None) -> None:
    assert status.legitimate is legitimate


@pytest.mark.parametrize(
    ("live_owner", "tomb_origin", "tomb_ended_at", "expected"),
    [
        # a live key names its owner
        ("worker-b", None, None, (Status.CROSS_WORKER, "worker-b")),
        # our own id that we no longer hold ended a moment ago
        ("worker-a", None, None, (Status.EXPIRED, "worker-a")),
        # a tombstone: ended before the request arrived
        (None, "worker-b", SEEN - 5, (Status.EXPIRED, "worker-b")),
        # ended after it arrived: it was live on its origin when it was used here
        (None, "worker-b", SEEN + 0.5, (Status.CROSS_WORKER, "worker-b")),
        # ... unless the origin is this worker
        (None, "worker-a", SEEN + 0.5, (Status.EXPIRED, "worker-a")),
        # a tombstone whose end time cannot be read
        (None, "worker-b", None, (Status.EXPIRED, "worker-b")),
        # nothing at all: nobody issued it within the retention window
        (None, None, None, (Status.FABRICATED, None)),
        # a live key wins over a tombstone
        ("worker-c", "worker-b", SEEN - 5, (Status.CROSS_WORKER, "worker-c")),
    ],
)
def test_what_the_registry_stores_classifies_an_id(
    live_owner: str | None, tomb_origin: str | None, tomb_ended_at: float | None, expected: tuple[Status, str | None]
) -> None:
    assert classify_stored(live_owner, tomb_origin, tomb_ended_at, seen_wall=SEEN, worker="worker-a") == expected


@pytest.mark.parametrize(
    ("forged", "issued_here", "expected"),
    [(True, False, Status.FABRICATED), (False, True, Status.EXPIRED), (False, False, None)],
)
def test_a_sealed_id_classifies_itself_in_process(forged: bool, issued_here: bool, expected: Status | None) -> None:
    assert classify_sealed(forged=forged, issued_here=issued_here) is expected


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (None, Status.CROSS_WORKER),
        (ForwardFailure.SESSION_GONE, Status.EXPIRED),
        (ForwardFailure.TIMEOUT, Status.CROSS_WORKER),
        (ForwardFailure.REFUSED, Status.CROSS_WORKER),
        (ForwardFailure.BROKEN, Status.CROSS_WORKER),
    ],
)
def test_a_hop_says_what_the_forwarded_id_was(failure: ForwardFailure | None, expected: Status) -> None:
    assert classify_hop(failure) is expected


def test_an_owner_gone_before_anything_reached_it_makes_its_session_lost_with_it() -> None:
    assert OWNER_GONE_OUTCOME == (Status.EXPIRED, EndReason.WORKER_LOST)


@pytest.mark.parametrize(
    ("method", "response_status", "is_initialize", "expected"),
    [
        ("GET", None, False, Status.MISSING),
        ("DELETE", None, False, Status.MISSING),
        ("POST", 400, False, Status.MISSING),  # the SDK's "Missing session ID"
        ("POST", 400, True, None),  # a bad initialize is not a missing id
        ("POST", 200, True, None),  # a session opened
        ("POST", 202, False, None),
        ("POST", 413, False, None),
    ],
)
def test_a_request_with_no_id_is_missing_it_only_where_it_needs_one(
    method: str, response_status: int | None, is_initialize: bool, expected: Status | None
) -> None:
    assert classify_without_id(method=method, response_status=response_status, is_initialize=is_initialize) is expected


@pytest.mark.parametrize(
    ("status", "action", "lost"),
    [
        (Status.CROSS_WORKER, Action.REJECT, True),  # live on another worker, 404 here: no continuity
        (Status.EXPIRED, Action.REJECT, True),  # ended, and the client still uses it
        (Status.EXPIRED, Action.ACK_DELETE, False),  # a DELETE of it: 200, what the client wanted
        (Status.CROSS_WORKER, Action.STRIP, False),  # an initialize with it: a fresh session
        (Status.CROSS_WORKER, Action.FORWARD, False),  # its owner serves it
        (Status.FABRICATED, Action.REJECT, False),  # nobody's session
        (Status.UNVERIFIED, Action.REJECT, False),  # nobody could tell
        (Status.MALFORMED, Action.REJECT, False),
    ],
)
def test_a_session_is_lost_when_its_client_gets_404_for_an_id_the_deployment_knows(
    status: Status, action: Action, lost: bool
) -> None:
    assert is_lost(status, action) is lost
