"""The client's options and their defaults, each bound a named constant with its unit last.

``ClientSettings`` holds what is fixed for a client's life (deadlines, waits, timeouts);
``ReadOptions`` holds what may change per read (where reads go and how stale they may be), so a
view made by ``Client.reading(...)`` shares the client's connections and session but reads with
other options.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from chorusdb.client.commands import RequestIds

# A failover (election timeout 500-1000 ms, then a first commit) takes about a second; ten give a
# busy machine room for several before a call gives up.
retry_deadline_ms_default = 10_000
# How long a follower may wait to apply the session token (and meet the staleness bounds)
# before the read falls back to the leader. Replication lag is milliseconds when healthy.
session_wait_ms_default = 500
# Topology is asked again after any failure; without failures, at most this often.
topology_refresh_ms_default = 5_000
# A member that refused or dropped a connection is not chosen again for this long (unless a
# topology of a newer epoch arrives first).
member_down_ms = 1_000
# One reply; must exceed the node's write_timeout_ms (2000 by default, then -INDOUBT) and the
# session wait, so a slow answer arrives as an answer, not as a timeout of unknown outcome.
socket_timeout_ms_default = 5_000
socket_connect_timeout_ms_default = 1_000
# Connections one client keeps to one member (redis-py's pool opens them on demand).
connections_per_member_max = 256
# Failures of one call quoted in ClusterUnavailableError (the newest ones).
failures_reported_max = 8
# The node's write_timeout_ms default: socket_timeout_ms must be above it (see above).
node_write_timeout_ms_default = 2_000


class ReadFrom(enum.Enum):
    """Where reads go. ``LEADER``: the leader, which confirms it still leads before answering
    (linearizable). ``FOLLOWER``: the followers in turn, the leader only when none can serve.
    ``ANY``: every member in turn. All three keep the session guarantees (token.py)."""

    LEADER = "leader"
    FOLLOWER = "follower"
    ANY = "any"


def _non_negative(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be an int >= 0 or None, not {value!r}")


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How one read is served: where (``read_from``) and how stale the serving member may be.
    ``max_staleness_ms``: it held everything the leader had committed at most this long ago;
    ``max_lag_entries``: it lacks at most this many committed entries. None: no bound. A member
    outside the bounds waits up to ``session_wait_ms`` for them, then the read goes to the
    leader, which is within any bound."""

    read_from: ReadFrom = ReadFrom.LEADER
    max_staleness_ms: int | None = None
    max_lag_entries: int | None = None

    def __post_init__(self) -> None:
        assert isinstance(self.read_from, ReadFrom), self.read_from
        _non_negative("max_staleness_ms", self.max_staleness_ms)
        _non_negative("max_lag_entries", self.max_lag_entries)

    def with_changes(self, read_from: ReadFrom | str | None = None,
                     max_staleness_ms: int | None = None,
                     max_lag_entries: int | None = None) -> ReadOptions:
        """These options with the given ones replaced (None: keep)."""
        changes: dict[str, object] = {}
        if read_from is not None:
            changes["read_from"] = ReadFrom(read_from)
        if max_staleness_ms is not None:
            changes["max_staleness_ms"] = max_staleness_ms
        if max_lag_entries is not None:
            changes["max_lag_entries"] = max_lag_entries
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What is fixed for a client's life; see the constants above for each default."""

    retry_deadline_ms: int = retry_deadline_ms_default
    session_wait_ms: int = session_wait_ms_default
    topology_refresh_ms: int = topology_refresh_ms_default
    socket_timeout_ms: int = socket_timeout_ms_default
    socket_connect_timeout_ms: int = socket_connect_timeout_ms_default
    request_ids: RequestIds = RequestIds.NON_IDEMPOTENT

    def __post_init__(self) -> None:
        for name in ("retry_deadline_ms", "session_wait_ms", "topology_refresh_ms",
                     "socket_timeout_ms", "socket_connect_timeout_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be an int > 0, not {value!r}")
        if self.socket_timeout_ms <= max(self.session_wait_ms, node_write_timeout_ms_default):
            raise ValueError(
                f"socket_timeout_ms ({self.socket_timeout_ms}) must exceed session_wait_ms "
                f"({self.session_wait_ms}) and the node's write timeout "
                f"({node_write_timeout_ms_default} ms): a slower answer would be read as a "
                f"failure of unknown outcome")
        assert isinstance(self.request_ids, RequestIds), self.request_ids
