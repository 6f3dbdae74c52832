"""The two messages of multi-leader replication: a node pulls each peer's log.

Every node keeps one log of the writes it applied, its own and those it pulled from others, in
the order it applied them (positions ``(1, index)`` of its own). A peer pulls that log from a
checkpoint, so writes travel through any node that has them (the ``star`` and ``ring``
topologies rely on it) and each write, named by its dot ``(origin, seq)``, is applied once per
node: a node skips the entries its version vector already covers.

``PullRequest``
    Sent by ``source`` to a peer it pulls from (``target``) every ``pull_interval_ms``, and at
    once after a reply that said there is more, in the ``Ready`` that persists that reply's
    entries (the driver persists before it sends, so the checkpoint it names is durable).
    ``incarnation`` and ``after_index`` are ``source``'s checkpoint of ``target``'s log: the
    last entry it applied durably, in the life of ``target``'s store named ``incarnation``
    (empty before the first reply). ``vector`` is what ``source`` has applied (its report of
    itself, which peers use to decide causal stability), ``now_ms`` its clock when sent (for
    the clock-offset guard). Nothing must be on disk first beyond the checkpoint.

``PullReply``
    Sent by ``target`` of a request back to its ``source``: up to ``pull_batch_entries_max``
    entries after ``after_index`` (or from the start when the checkpoint names another
    ``incarnation``; ``after_index`` then says where the batch starts), the index of its last
    entry (``last_index``: the puller sees how far behind it is), ``compacted`` when the entries
    the puller needs were trimmed (it cannot catch up from the log), its own ``vector`` and
    the latest report of every member it knows (``reports``), and its clock. The entries are
    durable on the sender: a reply goes out in a ``Ready`` whose writes include every entry it
    carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from chorusdb.core.causal import VersionVector
from chorusdb.core.model import LogEntry


@dataclass(frozen=True, slots=True)
class PullRequest:
    source: str
    target: str
    incarnation: str
    after_index: int
    vector: VersionVector
    now_ms: int


@dataclass(frozen=True, slots=True)
class PullReply:
    source: str
    target: str
    incarnation: str
    after_index: int
    entries: tuple[LogEntry, ...]
    last_index: int
    compacted: bool
    vector: VersionVector
    reports: tuple[tuple[str, VersionVector], ...]
    now_ms: int


MULTI_LEADER_MESSAGES = (PullRequest, PullReply)
