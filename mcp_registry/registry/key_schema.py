"""The Redis key schema: the registry's on-disk contract (the id hash `H` is `registry.hasher`'s).

Every key starts with the configured prefix, carries a TTL or has a bounded size, and puts
what moves together under one hash tag so that Redis Cluster can serve it:

| key                       | type   | holds                                             | bound        |
|---------------------------|--------|---------------------------------------------------|--------------|
| `P:hashkey`               | string | the deployment's id-hash key (agreed once)        | one value    |
| `P:s:{H}`                 | string | a live session: `origin|client|version[|route|handshake]` | TTL 3×refresh|
| `P:c:{H}`                 | string | a takeover's claim: the adopting worker           | TTL 3 s      |
| `P:t:{H}`                 | string | an ended session: `origin|ended-at|client|version`| TTL retention|
| `P:m:<minute>`            | hash   | per-minute counters (fields below)                | TTL retention|
| `P:workers`               | zset   | worker id → last heartbeat (epoch s)              | pruned       |
| `P:w:{W}`                 | hash   | `live`, `started`, `heartbeat` of one worker      | TTL retention|

`H` is the keyed hash of a session id (never the id), `W` a worker id, `<minute>` the epoch
minute. A session key and its tombstone share the hash tag `{H}`.

With takeover on (`route` present), a worker re-asserts `P:s:{H}` only while it still begins with
its own `origin|client|version|route|` (a Lua compare-and-set, `session_writes.WRITE_IF_STILL_OURS`):
an adopter's write is never undone by the owner it took the session from.

Per-minute counter fields (all integers, `|`-separated, labels sanitised by `label`):
`created|W`, `ended|W|reason`, `client|name|version`, `lookup|status|action`,
`reuse|origin|serving`, `requests|era`, `life|le` (lifetime histogram, `le` from
`LIFETIME_BUCKETS` or `inf`), `life_count`, `life_sum_ms`, `dropped|W|reason`,
`forward_failed|W|reason` (continuity's hops that no owner served, by `ForwardFailure`); per client
(the migration view): `creq|era|name|version` (requests: a legacy session's on its owner, a sessionless
client's by its User-Agent product), `chop|name|version` (of those, requests that hopped to the owner),
`clost|name|version` (sessions lost: a 404 to an id the registry knows). A live-session value and a
tombstone written before client labels (`origin`, `origin|ended-at`) still read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

LIFETIME_BUCKETS: Final = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
"""Upper bounds (seconds) of the session-lifetime histogram kept in Redis."""

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._:/@+\-]")
LABEL_MAX: Final = 64
SEP: Final = "|"


def label(text: str, limit: int = LABEL_MAX) -> str:
    """A counter-field label from untrusted text: safe characters only, bounded length."""
    return _UNSAFE.sub("_", text[:limit]) or "_"



Client = tuple[str, str]
"""A client's name and version (from `initialize`, or a User-Agent product token): untrusted, labelled."""


def live_value(worker: str, client: Client, takeover: tuple[str, str] | None = None) -> str:
    """`<origin worker>|<client name>|<client version>`, and with takeover on `|<owner's route>|<handshake>`:
    where its owner listens now and what re-creating the session needs (opaque here; the last field, so it
    may hold anything)."""
    value = f"{worker}{SEP}{label(client[0])}{SEP}{label(client[1], 32)}"
    return value if takeover is None else f"{value}{SEP}{takeover[0]}{SEP}{takeover[1]}"


def parse_live(value: str) -> tuple[str, Client | None]:
    """The origin worker and the client of a live-session value (None: written before client labels)."""
    parts = value.split(SEP, 4)
    return (parts[0], (parts[1], parts[2])) if len(parts) in (3, 5) else (value, None)


def parse_takeover(value: str) -> tuple[str, str] | None:
    """The owner's route and the stored handshake of a live-session value, if it has them."""
    parts = value.split(SEP, 4)
    return (parts[3], parts[4]) if len(parts) == 5 else None


def tombstone_value(worker: str, ended_at: float, client: Client) -> str:
    """`<origin worker>|<end time, epoch seconds>|<client name>|<client version>`."""
    return f"{worker}{SEP}{ended_at:.3f}{SEP}{label(client[0])}{SEP}{label(client[1], 32)}"


def parse_tombstone(value: str) -> tuple[str, float | None, Client | None]:
    """The origin, the end time and the client of a tombstone (each None when it does not say)."""
    parts = value.split(SEP)
    client = (parts[2], parts[3]) if len(parts) == 4 else None
    if len(parts) not in (2, 4):
        return value, None, None
    try:
        return parts[0], float(parts[1]), client
    except ValueError:
        return parts[0], None, client


def minute_of(epoch_seconds: float) -> int:
    return int(epoch_seconds // 60)


@dataclass(frozen=True, slots=True)
class KeySchema:
    prefix: str

    @property
    def hash_key(self) -> str:
        return f"{self.prefix}:hashkey"

    def session(self, h: str) -> str:
        return f"{self.prefix}:s:{{{h}}}"

    def tombstone(self, h: str) -> str:
        return f"{self.prefix}:t:{{{h}}}"

    def claim(self, h: str) -> str:
        return f"{self.prefix}:c:{{{h}}}"

    def minute(self, minute: int) -> str:
        return f"{self.prefix}:m:{minute}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:w:{{{worker_id}}}"


# --- per-minute counter fields -------------------------------------------------------------
def f_created(worker: str) -> str:
    return f"created|{worker}"


def f_ended(worker: str, reason: str) -> str:
    return f"ended|{worker}|{reason}"


def f_client(name: str, version: str) -> str:
    return f"client|{label(name)}|{label(version, 32)}"


def f_lookup(status: str, action: str) -> str:
    return f"lookup|{status}|{action}"


def f_reuse(origin: str, serving: str) -> str:
    return f"reuse|{origin}|{serving}"


def f_requests(era: str) -> str:
    return f"requests|{era}"


def f_lifetime(seconds: float) -> str:
    for bound in LIFETIME_BUCKETS:
        if seconds <= bound:
            return f"life|{bound}"
    return "life|inf"


F_LIFE_COUNT: Final = "life_count"
F_LIFE_SUM_MS: Final = "life_sum_ms"


def f_client_requests(era: str, name: str, version: str) -> str:
    return f"creq|{era}|{label(name)}|{label(version, 32)}"


def f_client_hops(name: str, version: str) -> str:
    return f"chop|{label(name)}|{label(version, 32)}"


def f_client_lost(name: str, version: str) -> str:
    return f"clost|{label(name)}|{label(version, 32)}"


def f_adopted(worker: str, reason: str) -> str:
    return f"adopted|{worker}|{reason}"


def f_takeover_failed(worker: str, reason: str) -> str:
    return f"adopt_failed|{worker}|{reason}"


def f_dropped(worker: str, reason: str) -> str:
    return f"dropped|{worker}|{reason}"


def f_forward_failed(worker: str, reason: str) -> str:
    return f"forward_failed|{worker}|{reason}"
