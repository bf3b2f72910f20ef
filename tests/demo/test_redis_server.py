from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from mcp_registry.demo._process import ChildFailedError
from mcp_registry.demo.redis_server import RedisServer

pytestmark = pytest.mark.integration


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def embedded() -> Iterator[RedisServer]:
    with RedisServer(embedded=True) as server:
        yield server


def test_a_started_server_serves_redis_commands_on_its_url(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    r = client(redis_server)
    r.set("k", "v", ex=60)
    assert r.get("k") == b"v"
    assert 0 < r.ttl("k") <= 60


def test_a_paused_server_answers_nothing_until_it_resumes(redis_server: RedisServer) -> None:
    r = client(redis_server)
    r.set("k", "v")
    redis_server.pause()
    with pytest.raises(redis.TimeoutError):
        r.get("k")
    redis_server.resume()
    assert client(redis_server).get("k") == b"v"


def test_restart_keeps_the_port_and_starts_empty(redis_server: RedisServer) -> None:
    client(redis_server).set("k", "v")
    port, old_pid = redis_server.port, redis_server.pid
    redis_server.restart()
    assert (redis_server.port, redis_server.ping()) == (port, True)
    assert redis_server.pid != old_pid
    assert client(redis_server).get("k") is None


def test_a_killed_server_is_unreachable_until_started_again(redis_server: RedisServer) -> None:
    redis_server.kill()
    assert not redis_server.running()
    with pytest.raises(redis.ConnectionError):
        client(redis_server).ping()
    redis_server.start()
    assert client(redis_server).ping()


def test_stop_leaves_no_process_even_when_paused(redis_server: RedisServer) -> None:
    pid = redis_server.pid
    assert pid is not None
    redis_server.pause()
    redis_server.stop()
    assert not process_exists(pid)
    redis_server.stop()  # idempotent


def test_the_embedded_server_serves_redis_commands_and_pauses_like_a_real_one(embedded: RedisServer) -> None:
    assert embedded.embedded
    r = client(embedded)
    r.hset("h", mapping={"a": 1})
    r.expire("h", 60)
    assert r.hgetall("h") == {b"a": b"1"}
    embedded.pause()
    with pytest.raises(redis.TimeoutError):
        r.ping()
    embedded.resume()
    assert client(embedded).ping()


def test_without_redis_server_on_path_the_default_is_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    assert RedisServer().embedded
    with pytest.raises(FileNotFoundError, match="redis-server is not on PATH"):
        RedisServer(embedded=False)


def test_a_server_whose_port_is_taken_fails_even_though_a_redis_answers_there(redis_server: RedisServer) -> None:
    with pytest.raises(ChildFailedError, match="exited with code"):
        RedisServer(port=redis_server.port, embedded=False).start()
    with pytest.raises(ChildFailedError, match="exited with code"):
        RedisServer(port=redis_server.port, embedded=True).start()
