"""This worker's part in session continuity: its route, the ids it seals, its listener and its hops.

`ContinuityNode.running()` (inside the app's lifespan) binds the internal listener and opens
the forwarding client; from then on every session this worker opens gets a sealed id naming
it (`sealed_id`), and `owner_of` tells, in process and with no Redis, which worker owns an id.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Final

from starlette.types import Receive, Scope, Send

from mcp_registry.addresses import (
    Address,
    Peers,
    default_peers,
    parse_advertise,
    parse_listen,
    parse_peers,
    parse_route,
)
from mcp_registry.config import RegistryConfig
from mcp_registry.continuity import hop_request
from mcp_registry.continuity.forwarder import Forwarder
from mcp_registry.continuity.hop import DRAINING_HEADER, GONE_HEADER, OWNER_HEADER, HopResult
from mcp_registry.continuity.hop_auth import HOP_HEADER, HOP_WORKER_HEADER, HopSigner, HopVerifier
from mcp_registry.continuity.listener import HopListener, ServeForwarded
from mcp_registry.continuity.sealed_id import BOOT_BYTES, Route, SessionIdSealer, Shape
from mcp_registry.outcomes import ForwardFailure, Refusal
from mcp_registry.telemetry import RequestStats, Telemetry

_INTERNAL_HEADERS: Final = frozenset(
    {HOP_HEADER, HOP_WORKER_HEADER, hop_request.HOP_REQUEST_HEADER, OWNER_HEADER, GONE_HEADER, DRAINING_HEADER}
)
"""Our own headers: a client that sends one has it dropped, never carried to the owner's app."""
ROUTE_CACHE_SIZE: Final = 4096
SUCCESSORS: Final = 4096
"""Sessions whose new owner (after a takeover) this worker remembers: one Redis read per session per worker."""
"""Opened ids remembered (a hop's id is verified once, not on every request of its session)."""


class ContinuityNode:
    def __init__(self, config: RegistryConfig, stats: RequestStats, telemetry: Telemetry) -> None:
        assert config.hash_key is not None  # RegistryConfig requires it for continuity
        self.config = config
        self.boot = secrets.token_bytes(BOOT_BYTES)
        self.sealer = SessionIdSealer(config.hash_key)
        self._signer = HopSigner(config.hash_key, boot=self.boot, worker_id=config.worker_id)
        self._verifier = HopVerifier(config.hash_key, self.boot)
        self._stats = stats
        telemetry.start_forward_counters((f.value for f in ForwardFailure), (r.value for r in Refusal))
        self._listen = parse_listen(config.forward_listen)
        self._advertise = parse_advertise(config.forward_advertise) if config.forward_advertise else None
        self.peers: Peers = (
            parse_peers(config.forward_peers) if config.forward_peers else default_peers(self._listen, self._advertise)
        )
        """Where this worker may forward; a route elsewhere is never dialled."""
        self._forwarder = Forwarder(timeout=config.forward_timeout)
        self._routes: dict[str, Route | Shape] = {}
        self._addresses: dict[str, Address] = {}
        self._listener: HopListener | None = None
        self.route: Route | None = None
        """This worker's own route, once its listener is bound."""
        self._adopting: ContextVar[str | None] = ContextVar("mcp_registry_adopting", default=None)
        self._successors: dict[str, Route] = {}
        self.draining = False
        """Shutting down: new forwarded requests are refused so that their sessions are adopted elsewhere."""

    @asynccontextmanager
    async def running(self, serve: ServeForwarded) -> AsyncIterator[None]:
        self._listener = HopListener(self._listen, self._verifier, self._stats, serve)
        bound = await self._listener.start()
        self.route = Route(str(self._advertised(bound)), self.boot)
        try:
            yield
        finally:
            await self.drain()
            await self._forwarder.aclose()

    async def drain(self) -> None:
        """Stop taking hops; forwarded requests and streams in flight finish (within the listener's bound)."""
        self.draining = True
        self.route = None  # sessions opened from now on are not sealed: nobody would serve their hops
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()

    def _advertised(self, bound: Address) -> Address:
        if self._advertise is None:
            return bound
        if self._advertise.path is None and self._advertise.port == 0:
            return self._advertise.with_port(bound.port)
        return self._advertise

    def seal(self, sdk_id: str) -> str:
        """The id a new session gets: the SDK's id, sealed with this worker's route (unsealed if not listening).

        While a session is being adopted (`adopting`), the id it already has."""
        if (adopted := self._adopting.get()) is not None:
            return adopted
        if self.route is None:
            return sdk_id
        return self.sealer.seal(sdk_id, self.route, self.config.route_label)

    def owner_of(self, session_id: str) -> Route | Shape:
        """The route sealed into `session_id`, or why there is none. Cached: hops repeat their ids.

        A route to an address outside `peers` is forged, whatever its MAC says: never dialled."""
        found = self._routes.get(session_id)
        if found is None:
            found = self.sealer.open(session_id)
            if isinstance(found, Route) and not self.is_mine(found) and not self._reachable(found):
                found = Shape.FORGED
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[session_id] = found
        return found

    def is_mine(self, route: Route) -> bool:
        return route.boot == self.boot

    @contextmanager
    def adopting(self, session_id: str) -> Iterator[None]:
        """Sessions the SDK admits in this context (the replayed `initialize`) get `session_id`."""
        token = self._adopting.set(session_id)
        try:
            yield
        finally:
            self._adopting.reset(token)

    def successor(self, session_id: str) -> Route | None:
        """The worker that adopted `session_id` from its sealed owner, as last learnt from the registry."""
        return self._successors.get(session_id)

    def remember_successor(self, session_id: str, route: Route) -> None:
        if len(self._successors) >= SUCCESSORS:
            self._successors.clear()
        self._successors[session_id] = route

    def forget_successor(self, session_id: str) -> None:
        self._successors.pop(session_id, None)

    def _reachable(self, route: Route) -> bool:
        address = self._address(route)
        return address is not None and self.peers.allows(address)

    def _address(self, route: Route) -> Address | None:
        address = self._addresses.get(route.address)
        if address is None:
            address = parse_route(route.address)
            if address is None:
                return None
            if len(self._addresses) >= ROUTE_CACHE_SIZE:
                self._addresses.clear()
            self._addresses[route.address] = address
        return address

    def forward(self, route: Route, scope: Scope, receive: Receive, send: Send) -> Awaitable[HopResult]:
        """The hop to `route`'s owner (one `owner_of` returned), as an awaitable (no coroutine frame of its own)."""
        address = self._address(route)
        assert address is not None  # owner_of checked it

        def sign() -> list[tuple[bytes, bytes]]:
            # When the request is sent: after the client's first body bytes, however slowly they came.
            request = hop_request.encode(scope, drop=_INTERNAL_HEADERS)
            now = time.time()
            return self._signer.headers(destination=route.boot, method=scope["method"], request=request, now=now)

        return self._forwarder.forward(address, scope, receive, send, sign)
