"""The migration view from per-client counters: rows per client and era, the bound, the verdict (pure)."""

from __future__ import annotations

from mcp_registry.registry.migration import TOP_CLIENTS, ClientCounters, ClientUse

MINUTE = 29_000_000


def counters(*rows: tuple[int, str, tuple[str, str, str], int]) -> ClientCounters:
    counted = ClientCounters()
    for minute, kind, key, value in rows:
        counted.add(minute, kind, key, value)
    return counted


def test_each_client_gets_its_sessions_requests_hops_losses_and_last_minute() -> None:
    legacy, modern = ("legacy", "claude-code", "2.1.4"), ("modern", "agent-x", "1.0")
    view = counters(
        (MINUTE, "sessions", legacy, 2), (MINUTE + 1, "requests", legacy, 40), (MINUTE + 1, "hopped", legacy, 7),
        (MINUTE + 2, "lost", legacy, 1), (MINUTE, "requests", modern, 5), (MINUTE + 3, "requests", modern, 0),
    ).migration(legacy_requests=44, modern_requests=5)

    assert view.clients == (
        ClientUse("legacy", "claude-code", "2.1.4", sessions=2, requests=40, hopped=7, lost=1,
                  last_seen=(MINUTE + 2) * 60.0),
        ClientUse("modern", "agent-x", "1.0", sessions=0, requests=5, hopped=0, lost=0, last_seen=MINUTE * 60.0),
    )  # fmt: skip
    assert (view.legacy_clients, view.modern_clients) == (1, 1)
    assert view.last_legacy_seen == (MINUTE + 2) * 60.0
    assert view.verdict().startswith("1 client(s) still need sessions (claude-code 2.1.4): 89.8% of requests;")


def test_clients_past_the_top_are_folded_into_other() -> None:
    rows = [(MINUTE, "requests", ("legacy", f"client-{i:03}", "1"), 100 - i) for i in range(TOP_CLIENTS + 5)]
    view = counters(*rows).migration(legacy_requests=1, modern_requests=0)

    assert len(view.clients) == TOP_CLIENTS + 1
    assert view.clients[0].name == "client-000"
    other = view.clients[-1]
    assert (other.name, other.version) == ("other", "5 clients")
    assert other.requests == sum(100 - i for i in range(TOP_CLIENTS, TOP_CLIENTS + 5))


def test_the_verdict_says_when_the_stateful_path_could_go() -> None:
    only_modern = counters((MINUTE, "requests", ("modern", "agent-x", "1.0"), 9))
    assert only_modern.migration(legacy_requests=0, modern_requests=9).verdict() == (
        "No client needed sessions in this window: the stateful path could be switched off."
    )
    nothing = ClientCounters().migration(legacy_requests=0, modern_requests=0)
    assert nothing.verdict() == "No client traffic in this window."
