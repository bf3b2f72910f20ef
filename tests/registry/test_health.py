"""Episodes of Redis trouble: logged once each way, back-off bounded, reaping held after one."""

from __future__ import annotations

import logging

import pytest

from mcp_registry.registry.health import BACKOFF_FIRST, BACKOFF_MAX, RedisHealth


def test_an_episode_is_logged_once_when_it_starts_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_registry")
    clock = [0.0]
    health = RedisHealth(grace_seconds=3, monotonic=lambda: clock[0])
    for _ in range(5):
        health.failed(ConnectionError("refused"), dropped=2)
        clock[0] += 1
    health.succeeded(dropped=9)
    health.succeeded(dropped=9)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "Redis is unavailable (ConnectionError)" in messages[0]
    assert "back after 5.0s; 7 events were dropped meanwhile" in messages[1]


def test_back_off_doubles_up_to_its_bound_and_resets() -> None:
    clock = [0.0]
    health = RedisHealth(grace_seconds=3, monotonic=lambda: clock[0])
    waits = []
    for _ in range(10):
        health.failed(None, dropped=0)
        waits.append(health.backoff_until - clock[0])
    assert waits[:3] == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST]
    assert max(waits) == BACKOFF_MAX
    assert health.in_backoff(clock[0])
    health.succeeded(dropped=0)
    health.failed(None, dropped=0)
    assert health.backoff_until - clock[0] == BACKOFF_FIRST


def test_no_reaping_during_an_episode_nor_for_a_grace_after_it() -> None:
    clock = [100.0]
    health = RedisHealth(grace_seconds=3, monotonic=lambda: clock[0])
    assert health.may_reap(clock[0])
    health.failed(None, dropped=0)
    assert not health.may_reap(clock[0])
    clock[0] += 10
    health.succeeded(dropped=0)
    assert not health.may_reap(clock[0] + 2.9)
    assert health.may_reap(clock[0] + 3)


def test_giving_up_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    health = RedisHealth(grace_seconds=3, monotonic=lambda: 0.0)
    health.give_up("use redis+cluster://host:port")
    assert health.misconfigured == "use redis+cluster://host:port"
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
