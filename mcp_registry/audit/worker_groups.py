"""The audit's worker table, grouped by host: readable when `host:pid` ids churn across restarts.

Pure. A worker id `host:pid` (the default, `MCP_SESSION_REGISTRY_WORKER_ID` unset) belongs to
`host`; any other id is a host of its own. Within a host, a worker that is neither alive nor did
anything in the window (created, ended, reused or served a session) is folded into one count:
after a day of deploys and restarts a host shows its live workers, the ones that mattered in the
window, and "+ N gone", not hundreds of dead pids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcp_registry.registry.report import WorkerStats


@dataclass(slots=True)
class HostGroup:
    host: str
    shown: list[WorkerStats] = field(default_factory=list)
    folded: int = 0
    """Workers gone with no activity in the window."""
    live: int = 0
    created: int = 0
    ended: int = 0
    reuse_issued: int = 0
    reuse_served: int = 0

    @property
    def workers(self) -> int:
        return len(self.shown) + self.folded


def host_of(worker: str) -> str:
    host, colon, pid = worker.rpartition(":")
    return host if colon and host and pid.isdigit() else worker


def active(worker: WorkerStats) -> bool:
    return bool(worker.created or worker.ended or worker.reuse_issued or worker.reuse_served)


def group_by_host(workers: list[WorkerStats]) -> list[HostGroup]:
    """Hosts in order of first appearance; each host's workers alive first, then by id."""
    groups: dict[str, HostGroup] = {}
    for worker in workers:
        group = groups.setdefault(host_of(worker.worker), HostGroup(host_of(worker.worker)))
        group.live += worker.live
        group.created += worker.created
        group.ended += worker.ended
        group.reuse_issued += worker.reuse_issued
        group.reuse_served += worker.reuse_served
        if worker.alive or active(worker):
            group.shown.append(worker)
        else:
            group.folded += 1
    for group in groups.values():
        group.shown.sort(key=lambda w: (not w.alive, w.worker))
    return list(groups.values())
