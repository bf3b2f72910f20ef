"""Throw-away Redis Cluster and Sentinel set-ups of real `redis-server` processes, for tests and benchmarks.

Each node listens on its own loopback address (127.0.0.11, .12, …: one "machine" per node) and
port; nothing is persisted. Waits are bounded; a set-up that does not come together raises with
the state it reached::

    with LocalCluster(masters=3, replicas=1) as cluster:
        cluster.url                     # redis+cluster://127.0.0.11:<p>,…
        victim = cluster.masters()[0]
        victim.kill()
        cluster.wait_promoted(victim)   # a replica took over its slots

    with LocalSentinel(replicas=1, sentinels=3) as sentinel:
        sentinel.url                    # redis+sentinel://127.0.0.31:<p>,…/mymaster
        sentinel.master().kill()
        sentinel.wait_failover()
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self, TypeVar

import redis
from redis.cluster import ClusterNode

from mcp_registry.demo import _process
from mcp_registry.demo.redis_server import RedisServer

SLOTS: Final = 16384
SERVICE: Final = "mymaster"
T = TypeVar("T")


class TopologyError(RuntimeError):
    """A cluster or Sentinel set-up did not reach the expected state in time."""


def wait_until(read: Callable[[], T], ready: Callable[[T], bool], *, bound: float, what: str) -> T:
    """Read until `ready` holds; `TopologyError` with the last reading after `bound` seconds."""
    deadline = time.monotonic() + bound
    while True:
        last: object
        try:
            value = read()
        except (redis.RedisError, OSError) as exc:
            last = exc  # a node that is starting or has just died: read again
        else:
            if ready(value):
                return value
            last = value
        if time.monotonic() > deadline:
            raise TopologyError(f"{what}: not within {bound:.0f}s (last: {last!r})")
        time.sleep(_process.POLL_INTERVAL)  # between two reads of a bounded poll


@contextmanager
def client(server: RedisServer, password: str | None = None) -> Iterator[redis.Redis]:
    with redis.Redis(host=server.host, port=server.port, password=password, decode_responses=True,
                     socket_timeout=2) as r:  # fmt: skip
        yield r


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise TopologyError(f"{what} failed: {done.stdout[-2000:]}{done.stderr}")


def _loopback(index: int) -> str:
    return f"127.0.0.{index}"


@dataclass(frozen=True, slots=True)
class ClusterTls:
    """TLS for every node: clients (on a TLS port of their own), the cluster bus and replication.

    `cert` serves and is also presented to the other nodes (give it both serverAuth and clientAuth,
    and every node's address as a SAN); clients must present a certificate `ca` signed."""

    cert: Path
    key: Path
    ca: Path


class LocalCluster(_process.StartStop):
    """`masters` masters with `replicas` replicas each, created with `redis-cli --cluster create`.

    `password` protects the `default` user (the helpers here use it); each of `users` is an ACL
    rule list for one more user, e.g. `"registry on >secret ~prefix:* +@all"`. With `tls`, each node
    also listens on a TLS port and `url` names those (`rediss+cluster://`); the helpers here keep
    to the plain ports, which Redis answers with plain addresses (and TLS clients with TLS ones).
    """

    def __init__(self, masters: int = 3, replicas: int = 0, *, node_timeout_ms: int = 1000, first_host: int = 11,
                 startup_timeout: float = 30.0, password: str | None = None,
                 users: Sequence[str] = (), tls: ClusterTls | None = None) -> None:  # fmt: skip
        if shutil.which("redis-cli") is None:
            raise FileNotFoundError("redis-cli is not on PATH (Debian: redis-tools, with redis-server)")
        self._timeout = startup_timeout
        self.nodes: list[RedisServer] = []
        self.tls_ports: list[int] = []
        for index in range(masters * (1 + replicas)):
            host = _loopback(first_host + index)
            port, bus, tls_port = _process.free_ports(3, host)
            self.tls_ports.append(tls_port)
            secure = [] if tls is None else [
                "--tls-port", str(tls_port), "--tls-cluster", "yes", "--tls-replication", "yes",
                "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca),
                "--tls-auth-clients", "yes",
            ]  # fmt: skip
            self.nodes.append(RedisServer(embedded=False, host=host, port=port, args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-port", str(bus),
                "--cluster-announce-ip", host,
                "--cluster-replica-validity-factor", "0",  # any replica may take over, however long apart
                *(["--requirepass", password, "--masterauth", password] if password else []),
                *(token for rule in users for token in ["--user", *rule.split()]),
                *secure,
            ], password=password))  # fmt: skip
        self._tls = tls
        self._password = password
        self._masters = masters
        self._replicas = replicas
        self._rows: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        """A cluster URL with every master as a seed (their TLS ports, `rediss+cluster://`, with `tls`)."""
        if self._tls is not None:
            seeds = zip(self.nodes[: self._masters], self.tls_ports, strict=False)
            return "rediss+cluster://" + ",".join(f"{node.host}:{port}" for node, port in seeds)
        return "redis+cluster://" + ",".join(node.address for node in self.nodes[: self._masters])

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
            created = subprocess.run(
                [*self._cli(), "--cluster", "create", *(n.address for n in self.nodes),
                 "--cluster-replicas", str(self._replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=self._timeout, check=False,
            )  # fmt: skip
            _check(created, "redis-cli --cluster create")
            self.wait_healthy()
            self.remember_layout()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


    # --- what the cluster looks like ---------------------------------------------------------------
    def node_table(self, via: RedisServer | None = None) -> list[dict[str, str]]:
        """`CLUSTER NODES` as seen from `via` (else the first node that answers): id, address, flags,
        master (`-` for a master), slots (empty when it serves none)."""
        for node in [via] if via is not None else [n for n in self.nodes if n.running()]:
            with client(node, self._password) as r:
                table = r.cluster("nodes")
            return [
                {"id": row["node_id"], "address": address.split("@")[0], "flags": row["flags"],
                 "master": row["master_id"], "slots": " ".join("-".join(pair) for pair in row["slots"])}
                for address, row in table.items()
            ]  # fmt: skip
        raise TopologyError("no node of the cluster is running")

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters serving slots now."""
        by_address = {node.address: node for node in self.nodes}
        return [
            by_address[row["address"]]
            for row in self.node_table()
            if "master" in row["flags"] and "fail" not in row["flags"] and row["slots"]
            and by_address[row["address"]].running()
        ]

    def node_id(self, node: RedisServer) -> str:
        with client(node, self._password) as r:
            return str(r.execute_command("CLUSTER MYID"))  # type: ignore[no-untyped-call]

    def healthy(self) -> bool:
        """Every running node says the cluster is ok, all slots covered, every replica in sync."""
        for node in self.nodes:
            if not node.running():
                continue
            with client(node, self._password) as r:
                fields = {k: str(v) for k, v in r.cluster("info").items()}
                replication = r.info("replication")
            if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != str(SLOTS):
                return False
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def wait_healthy(self, bound: float | None = None) -> None:
        wait_until(self.healthy, bool, bound=bound or self._timeout, what="the cluster to be healthy")

    def wait_promoted(self, dead: RedisServer, bound: float = 30.0) -> RedisServer:
        """After `dead` (a master) was killed: the replica that took over its slots, once serving."""
        dead_id = self.node_id_of(dead)

        def promoted() -> RedisServer | None:
            rows = self.node_table()
            for row in rows:
                if row["master"] == "-" and "master" in row["flags"] and row["slots"] and row["id"] != dead_id:
                    node = next(n for n in self.nodes if n.address == row["address"])
                    was_replica = any(r["id"] == row["id"] for r in self._rows if r["master"] == dead_id)
                    if was_replica:
                        return node
            return None

        node = wait_until(promoted, lambda n: n is not None, bound=bound, what=f"a replica of {dead.address} promoted")
        assert node is not None
        wait_until(self.healthy, bool, bound=bound, what="the cluster to be ok after the failover")
        return node

    def node_id_of(self, node: RedisServer) -> str:
        for row in self._rows:
            if row["address"] == node.address:
                return row["id"]
        raise KeyError(node.address)

    def remember_layout(self) -> None:
        """Note who replicates whom now (`wait_promoted` finds the replica of a master killed later)."""
        self._rows = self.node_table()

    def reshard(self, source: RedisServer, target: RedisServer, slots: int) -> str:
        """Move `slots` slots from `source` to `target` with `redis-cli --cluster reshard` (keys move too)."""
        done = subprocess.run(
            [*self._cli(), "--cluster", "reshard", source.address,
             "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target),
             "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "10"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        _check(done, "redis-cli --cluster reshard")
        self.wait_healthy()
        return done.stdout

    def keys_per_master(self, pattern: str) -> dict[str, int]:
        """How many keys matching `pattern` each serving master holds (SCAN on each)."""
        counts = {}
        for node in self.masters():
            with client(node, self._password) as r:
                counts[node.address] = sum(1 for _ in r.scan_iter(match=pattern, count=1000))
        return counts

    def sync_client(self) -> redis.RedisCluster:
        """A cluster client seeded with every running node."""
        seeds = [ClusterNode(n.host, n.port) for n in self.nodes if n.running()]  # type: ignore[no-untyped-call]
        return redis.RedisCluster(startup_nodes=seeds, password=self._password, decode_responses=True,
                                  socket_timeout=2)  # fmt: skip

    def _cli(self) -> list[str]:
        return ["redis-cli", *(["-a", self._password, "--no-auth-warning"] if self._password else [])]


class LocalSentinel(_process.StartStop):
    """A master, `replicas` replicas and `sentinels` Sentinels (quorum: a majority) watching it."""

    def __init__(self, replicas: int = 1, sentinels: int = 3, *, down_after_ms: int = 1000, first_host: int = 31,
                 startup_timeout: float = 30.0) -> None:  # fmt: skip
        executable = shutil.which("redis-sentinel")
        if executable is None:
            raise FileNotFoundError("redis-sentinel is not on PATH (Debian: redis-sentinel)")
        self._timeout = startup_timeout
        host = _loopback(first_host)
        self.data: list[RedisServer] = [RedisServer(embedded=False, host=host)]
        master = self.data[0]
        for index in range(replicas):
            replica_host = _loopback(first_host + 1 + index)
            self.data.append(RedisServer(embedded=False, host=replica_host, args=[
                "--replicaof", master.host, str(master.port),
                "--replica-announce-ip", replica_host,  # (else the master sees 127.0.0.1, where it does not listen)
            ]))  # fmt: skip
        quorum = sentinels // 2 + 1
        config = (
            f"sentinel monitor {SERVICE} {master.host} {master.port} {quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {max(3000, 3 * down_after_ms)}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        hosts = [_loopback(first_host + 1 + replicas + index) for index in range(sentinels)]
        self.sentinels = [
            RedisServer(embedded=False, host=h, config=f"{config}sentinel announce-ip {h}\n", executable=executable)
            for h in hosts
        ]

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(s.address for s in self.sentinels) + f"/{SERVICE}"

    def start(self) -> Self:
        try:
            for server in self.data:
                server.start()
            self.wait_replicated()
            for sentinel in self.sentinels:
                sentinel.start()
            others, replicas = len(self.sentinels) - 1, len(self.data) - 1
            for sentinel in self.sentinels:
                wait_until(lambda s=sentinel: self._view(s), lambda v: v == (others, replicas),  # type: ignore[misc]
                           bound=self._timeout, what=f"sentinel {sentinel.address} to see the others")  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in [*self.sentinels, *self.data]:
            server.stop()


    def master(self) -> RedisServer:
        """The data node the Sentinels name as master now."""
        for sentinel in self.sentinels:
            if not sentinel.running():
                continue
            with client(sentinel) as r:
                host, port = r.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)  # type: ignore[no-untyped-call]
            return next(s for s in self.data if s.address == f"{host}:{port}")
        raise TopologyError("no Sentinel is running")

    def wait_failover(self, old: RedisServer, bound: float = 30.0) -> RedisServer:
        """After `old` (the master) died: the replica every Sentinel names instead, once it accepts writes."""

        def new_master() -> RedisServer | None:
            named = self.master()
            if named is old:
                return None
            with client(named) as r:
                return named if r.info("replication").get("role") == "master" else None

        found = wait_until(new_master, lambda n: n is not None, bound=bound, what=f"a failover away from {old.address}")
        assert found is not None
        return found

    def wait_replicated(self) -> None:
        for replica in self.data[1:]:
            wait_until(lambda r=replica: self._link(r), lambda up: up == "up", bound=self._timeout,  # type: ignore[misc]
                       what=f"replica {replica.address} in sync")  # fmt: skip

    @staticmethod
    def _link(replica: RedisServer) -> str:
        with client(replica) as r:
            return str(r.info("replication").get("master_link_status"))

    @staticmethod
    def _view(sentinel: RedisServer) -> tuple[int, int]:
        with client(sentinel) as r:
            state = r.execute_command("SENTINEL", "MASTER", SERVICE)  # type: ignore[no-untyped-call]
        fields = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else dict(state)
        return int(fields["num-other-sentinels"]), int(fields["num-slaves"])
