"""The one interface every replication core implements, modelled on etcd's raft ``Node``.

A driver (the asyncio server, or the simulator) feeds a core three kinds of input:

- ``propose(command, request_id, now_ms)`` — a client command (read or write);
- ``step(message, now_ms)`` — a message from a peer;
- ``tick(now_ms)`` — time passed (call it at ``Ready.deadline_ms`` at the latest);

and drains its output with ``ready()``, which returns a ``Ready``. The driver carries a ``Ready``
out in this order and then calls ``advance(ready)``:

1. persist ``writes``, in order, in one transaction (fsync'd where the node promises durability);
2. send ``messages`` to peers: every message carries a ``target`` attribute, the member id it
   is for, and the driver routes by it;
3. send ``replies`` to clients, by request id;
4. record ``notes`` (logs, metrics, history);
5. schedule ``tick`` no later than ``deadline_ms``.

After a ``tick`` the core always has a ``Ready`` (if only to carry the next ``deadline_ms``), so
a driver that schedules its ticks from ``Ready.deadline_ms`` never loses the chain of ticks.

Only one ``Ready`` is outstanding at a time: the driver calls ``ready()`` again only after it
called ``advance`` on the previous one. Proposals keep arriving meanwhile, so everything that
queued up during one fsync is persisted by the next in a single transaction — that is the group
commit, and the batch grows with the load.

``now_ms`` is the node's wall clock in milliseconds; the driver guarantees it never goes
backwards. It decides expiry (stored as absolute times) and timeouts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from chorusdb.core.model import Position, RecoveredState, Write


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """A command as the client sent it: upper-cased name and raw argument bytes.

    ``linearizable``: the connection asked for linearizable reads (``CHORUS.CONSISTENCY``, or
    ``CHORUS.WAITPOS ... LINEARIZABLE``), so a node that cannot answer a read linearizably (a
    follower) refuses it instead of answering from what it has applied.
    """

    name: bytes
    args: tuple[bytes, ...]
    linearizable: bool = False


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The reply to the proposal that carried ``request_id`` (a value from ``core.replies``).

    ``position`` is where a write landed in the log (``None`` for a command that wrote
    nothing): the server remembers it per connection for ``WAIT`` and ``CHORUS.POSITION``.
    ``stale`` marks a read answered from a replica's applied state without confirming that it
    is current (a follower's default): such a read promises a consistent prefix, not
    linearizability, and the checkers judge it so.
    """

    request_id: int
    value: object
    position: Position | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Probe:
    """A note that a rare code path ran (``Probe("torn_record_recovered")``); the simulator
    counts them so CI can insist that the rare paths were exercised."""

    name: str


@dataclass(frozen=True, slots=True)
class Committed:
    """The writes up to ``position`` are acknowledged to clients (emitted only when the core's
    config asks for history notes: the simulator uses it to attribute losses)."""

    position: Position


@dataclass(frozen=True, slots=True)
class WriteAcknowledged:
    """The write proposed with ``request_id`` was acknowledged at ``position`` (history notes
    only, see ``Committed``)."""

    request_id: int
    position: Position


NO_DEADLINE = -1


@dataclass(slots=True)
class Ready:
    """What the core wants done; see the module docstring for the order of execution."""

    writes: list[Write] = field(default_factory=list)
    messages: list[object] = field(default_factory=list)
    replies: list[ClientReply] = field(default_factory=list)
    notes: list[object] = field(default_factory=list)
    deadline_ms: int = NO_DEADLINE

    def is_empty(self) -> bool:
        return not (self.writes or self.messages or self.replies or self.notes)


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """What every core needs to know about its node and cluster.

    ``members`` lists every member id, this node included, in configuration order. ``bugs``
    switches on known defects by name (simulator and chaos demonstrations only); each core lists
    the ones it has in ``KNOWN_BUGS``. ``history_notes`` adds per-write notes for checkers.
    ``settings`` carries the mode's own settings (``LeaderSettings`` for leader mode; ``None``:
    the mode's defaults).
    """

    node_id: str
    members: tuple[str, ...]
    bugs: frozenset[str] = frozenset()
    history_notes: bool = False
    settings: object = None


class Core(Protocol):
    """The interface of every replication mode; the drivers know nothing else about a core.

    ``CLAIMS`` names what the mode promises, in the checkers' vocabulary (``linearizable``,
    ``consistent_prefix``, ``no_lost_writes``, ``convergence``, ``session``): the simulator and
    the fault harness check exactly these, so a mode that promises less says so here.
    ``KNOWN_BUGS`` maps the defects that ``CoreConfig.bugs`` can switch on to what they break.
    ``DATA_LOSS_EXEMPT_ROLES`` names the roles the fault injector must not take power or the
    data directory from, because the mode does not survive it yet (a leader before elections
    exist).
    """

    mode: str
    CLAIMS: frozenset[str]
    KNOWN_BUGS: dict[str, str]
    DATA_LOSS_EXEMPT_ROLES: frozenset[str]

    def __init__(self, config: CoreConfig, recovered: RecoveredState, rng: random.Random,
                 now_ms: int) -> None: ...

    def propose(self, command: ClientCommand, request_id: int, now_ms: int) -> None: ...

    def step(self, message: object, now_ms: int) -> None: ...

    def tick(self, now_ms: int) -> None: ...

    def has_ready(self) -> bool: ...

    def ready(self) -> Ready: ...

    def advance(self, ready: Ready) -> None: ...

    def status(self) -> dict: ...
