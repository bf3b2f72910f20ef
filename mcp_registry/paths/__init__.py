"""The request paths `SessionRegistryMiddleware` dispatches to, one module each.

- `own`: a request on one of this worker's own sessions (the hot path's rare cases: a DELETE, a span);
- `opening`: a request with no id (a session opening, or `missing`);
- `stale`: a stale or malformed id (read the body when needed, decide, apply; forward to the owner
  and decide again when the owner is gone);
- `asgi`: the small ASGI helpers they share (buffer and replay a body, answer here).

The owner's side of a hop is `continuity.owner`.
"""
