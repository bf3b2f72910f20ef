"""The audit's worker table grouped by host, with churned workers folded."""

from __future__ import annotations

from mcp_registry.audit.worker_groups import group_by_host, host_of
from mcp_registry.registry.report import WorkerStats


def worker(name: str, *, alive: bool = False, created: int = 0, live: int = 0) -> WorkerStats:
    return WorkerStats(name, alive, 1.0 if alive else None, live, created, 0, 0, 0)


def test_a_host_pid_id_belongs_to_its_host_and_any_other_id_is_its_own() -> None:
    assert host_of("web-1.example:4242") == "web-1.example"
    assert host_of("worker-0") == "worker-0"
    assert host_of("w:abc") == "w:abc"
    assert host_of("[::1]:77") == "[::1]"


def test_restarts_fold_into_one_count_per_host_and_what_matters_stays() -> None:
    churned = [worker(f"web-1:{pid}") for pid in range(100, 140)]
    groups = group_by_host([
        *churned, worker("web-1:200", alive=True, live=3, created=5), worker("web-1:150", created=2),
        worker("web-2:300", alive=True, live=1), worker("solo"),
    ])  # fmt: skip
    web1, web2, solo = groups
    assert [w.worker for w in web1.shown] == ["web-1:200", "web-1:150"]  # alive first, then the active one
    assert (web1.folded, web1.workers, web1.live, web1.created) == (40, 42, 3, 7)
    assert [w.worker for w in web2.shown] == ["web-2:300"]
    assert (solo.host, solo.folded, solo.shown) == ("solo", 1, [])
