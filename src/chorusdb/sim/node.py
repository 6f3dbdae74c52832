"""The simulated node: a real core over the in-memory store, driven exactly as the server does.

``SimNode`` is the simulator's copy of ``server.node.Node``'s loop, on virtual time:

1. inputs reach the core as they arrive: client requests (``propose``), peer messages
   (``step``) and timers (``tick``), each with the node's own ``now_ms``;
2. one ``Ready`` at a time: its writes go to the store at once (``MemoryStore.write``: they sit
   in the OS page cache) and the persist completes after a disk latency. With durability
   ``"fsync"`` completion calls ``sync()`` (they are on the platter); with ``"os"`` completion is
   a page-cache write and the OS writes pending records back on its own schedule (the
   ``os_writeback`` event, every few hundred virtual ms, whatever the node does);
3. only then: messages go to the network, replies to their clients, notes to the observer, the
   tick is scheduled at ``deadline_ms`` (the earliest deadline asked for wins, as in the server),
   and ``advance`` confirms the ``Ready``; if the core has more, the next ``Ready`` follows.
   Whatever was proposed during the persist waits in the core and forms the next ``Ready``:
   group commit, as in the server.

Peer messages are routed by their ``target`` attribute (the node id they are for); every
message type of a replicated mode carries one.

Faults the node itself models:

- **pause** (SIGSTOP): every event for the node (deliveries, timers, persist completions)
  queues up; on resume they run at once, in arrival order, with the node's clock jumped ahead.
- **crash**: the core object, its ``Ready`` in flight, its timers, its client routes and the
  messages on their way to it are gone (clients of those requests time out).
  ``MemoryStore.crash`` decides what the disk kept: every written record on a process crash
  (SIGKILL leaves the page cache alone); on power loss only synced records plus a random prefix
  of the pending ones, the last maybe torn. A crash can also be armed to strike while the next
  persist is in flight (``crash_during_next_persist``).
- **restart**: ``MemoryStore.recover()`` replays what survived (CRC-checked), and a new core
  object starts from it with a fresh random stream.

Events scheduled for an old incarnation carry its number and are ignored after a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from chorusdb.core.api import NO_DEADLINE, ClientCommand, ClientReply, Core, CoreConfig, Ready
from chorusdb.core.keyspace import request_key
from chorusdb.core.model import (
    AppendEntry,
    ClearRecords,
    DeleteKeys,
    DeleteRecord,
    Effect,
    EpochStart,
    FlushAll,
    PutDivergent,
    PutRecord,
    RecoveredState,
    Write,
)
from chorusdb.core.model import Request as RequestEffect  # sim has a Request of its own
from chorusdb.sim.clock import NodeClock
from chorusdb.sim.network import Network
from chorusdb.sim.world import World
from chorusdb.storage.memory_store import CrashReport, MemoryStore


@dataclass(frozen=True, slots=True)
class Request:
    """A client command on its way to a node (the simulated RESP connection carries it)."""

    request_id: int
    command: ClientCommand


@dataclass(frozen=True, slots=True)
class Response:
    """A node's reply on its way back to the client worker that sent ``request_id``;
    ``stale`` as in ``ClientReply``."""

    request_id: int
    value: object
    node_id: str
    stale: bool = False


@dataclass(frozen=True, slots=True)
class DiskTiming:
    """How long persisting takes: an fsync is ``fsync_us_min`` plus an exponential part with
    mean ``fsync_us_mean``; a write into the page cache takes ``page_cache_write_us``; the OS
    writes pending records back every ``writeback_interval_us``."""

    fsync_us_min: int
    fsync_us_mean: int
    page_cache_write_us: int
    writeback_interval_us: int


@dataclass(frozen=True, slots=True)
class ArmedCrash:
    """A crash waiting for the node's next persist; ``after_crash`` runs once it happened."""

    power_loss: bool
    torn_probability: float
    after_crash: Callable[[], None]


class NodeObserver(Protocol):
    """What the run learns from a node as it happens (online invariants, history, probes)."""

    def on_ready(self, node: SimNode, ready: Ready) -> None: ...

    def on_carried_out(self, node: SimNode, ready: Ready) -> None: ...

    def on_sync(self, node: SimNode) -> None: ...

    def on_crash(self, node: SimNode, report: CrashReport,
                 lost_keys: frozenset[bytes] | None) -> None:
        """``lost_keys``: the keys written by the records the crash dropped or tore (``None``:
        one of them cleared every key)."""

    def on_restart(self, node: SimNode, recovered: RecoveredState) -> None: ...

    def on_disk_lost(self, node: SimNode) -> None: ...


Reply = Callable[[ClientReply], None]


def effect_keys(effect: Effect) -> tuple[bytes, ...] | None:
    """The keys ``effect`` changes; ``None`` if it changes every key."""
    kind = type(effect)
    if kind is DeleteKeys:
        return effect.keys
    if kind is FlushAll:
        return None
    if kind is EpochStart:
        return ()
    if kind is RequestEffect:
        keys = [request_key(effect.request_id)]
        for inner in effect.effects:
            changed = effect_keys(inner)
            if changed is None:
                return None
            keys.extend(changed)
        return tuple(keys)
    return (effect.key,)


def keys_written(writes: list[Write]) -> frozenset[bytes] | None:
    """The keys whose stored state ``writes`` change; ``None`` if they clear every key.

    The log counts as stored state: an appended entry writes its keys, and so does an entry a
    ``TruncateLogAfter`` removes (losing the truncation brings it back). The removed entries are
    the ones the ``PutDivergent`` writes of the same batch quarantine, so those name their keys.
    """
    keys: set[bytes] = set()
    for write in writes:
        kind = type(write)
        if kind is PutRecord or kind is DeleteRecord:
            keys.add(write.key)
        elif kind is AppendEntry or kind is PutDivergent:
            entry = write.entry if kind is AppendEntry else write.item.entry
            changed = effect_keys(entry.effect)
            if changed is None:
                return None
            keys.update(changed)
        elif kind is ClearRecords:
            return None
    return frozenset(keys)


class SimNode:
    """One node of the simulated cluster; see the module docstring."""

    def __init__(self, *, world: World, network: Network, core_class: type[Core],
                 config: CoreConfig, store: MemoryStore, clock: NodeClock, durability: str,
                 disk: DiskTiming, observer: NodeObserver) -> None:
        assert durability in ("fsync", "os")
        self.world = world
        self.network = network
        self.node_id = config.node_id
        self.core_class = core_class
        self.config = config
        self.store = store
        self.clock = clock
        self.durability = durability
        self.disk = disk
        self.observer = observer
        self.core: Core | None = None
        self.incarnation = 0
        self.paused = False
        self.last_sync_us = 0
        self._disk_rng = world.streams["disk"]
        self._outstanding: Ready | None = None
        self._unsynced_keys: list[frozenset[bytes] | None] = []   # per record since the sync
        self._routes: dict[int, Reply] = {}
        self._backlog: list[tuple[Callable[..., None], tuple[object, ...]]] = []
        self._tick_deadline_ms = NO_DEADLINE
        self._tick_generation = 0
        self._armed_crash: ArmedCrash | None = None
        network.attach(self.node_id, self.receive)
        world.after(disk.writeback_interval_us, self._os_writeback)

    # --- state ------------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self.core is not None

    def now_ms(self) -> int:
        return self.clock.now_ms(self.world.now_us)

    def role(self) -> str:
        """The core's role now (``status()["role"]``); the node must be up."""
        assert self.core is not None
        return self.core.status()["role"]

    def is_idle(self) -> bool:
        """Up, running, nothing being persisted and nothing more to carry out."""
        core = self.core
        return (core is not None and not self.paused and self._outstanding is None
                and not core.has_ready())

    # --- inputs -------------------------------------------------------------------------------

    def receive(self, source: str, payload: object) -> None:
        """A network delivery: a client ``Request`` or a peer message."""
        core = self.core
        if core is None:
            self.world.trace("lost", self.node_id, "node down")
            return
        if self.paused:
            self._backlog.append((self.receive, (source, payload)))
            return
        if isinstance(payload, Request):
            self.world.trace("propose", self.node_id, payload.request_id)
            self._routes[payload.request_id] = partial(self._reply_over_network, source,
                                                       payload.request_id)
            core.propose(payload.command, payload.request_id, self.now_ms())
        else:
            self.world.trace("step", self.node_id, payload)
            core.step(payload, self.now_ms())
        self._pump()

    def propose_locally(self, request_id: int, command: ClientCommand, reply: Reply) -> None:
        """Propose without the network (the final reads of a run); ``reply(client_reply)``
        gets the answer unless the node crashes first."""
        assert self.core is not None and not self.paused
        self._routes[request_id] = reply
        self.core.propose(command, request_id, self.now_ms())
        self._pump()

    def _reply_over_network(self, client: str, request_id: int, reply: ClientReply) -> None:
        self.network.send(self.node_id, client,
                          Response(request_id, reply.value, self.node_id, reply.stale))

    def _tick(self, incarnation: int, generation: int) -> None:
        if incarnation != self.incarnation or generation != self._tick_generation:
            return
        if self.paused:
            self._backlog.append((self._tick, (incarnation, generation)))
            return
        assert self.core is not None
        self._tick_deadline_ms = NO_DEADLINE
        self.core.tick(self.now_ms())
        self._pump()

    # --- the Ready loop -------------------------------------------------------------------------

    def _pump(self) -> None:
        core = self.core
        while core is not None and not self.paused and self._outstanding is None \
                and core.has_ready():
            ready = core.ready()
            self.observer.on_ready(self, ready)
            if ready.writes:
                self.store.write(ready.writes)
                self._unsynced_keys.append(keys_written(ready.writes))
                self._outstanding = ready
                if self.durability == "fsync":
                    latency_us = self.disk.fsync_us_min + int(
                        self._disk_rng.expovariate(1.0 / self.disk.fsync_us_mean))
                else:
                    latency_us = self.disk.page_cache_write_us
                self.world.after(latency_us, self._persisted, self.incarnation, ready)
                if self._armed_crash is not None:
                    self.world.after(self._disk_rng.randrange(latency_us), self._crash_mid_persist,
                                     self.incarnation)
                return
            self._carry_out(ready)

    def _persisted(self, incarnation: int, ready: Ready) -> None:
        if incarnation != self.incarnation:
            return
        if self.paused:
            self._backlog.append((self._persisted, (incarnation, ready)))
            return
        assert self._outstanding is ready
        if self.durability == "fsync":
            self._sync()
        self._outstanding = None
        self._carry_out(ready)
        self._pump()

    def _carry_out(self, ready: Ready) -> None:
        core = self.core
        assert core is not None
        for message in ready.messages:
            self.network.send(self.node_id, message.target, message)
        routes = self._routes
        for reply in ready.replies:
            route = routes.pop(reply.request_id, None)
            if route is not None:
                route(reply)
        self.observer.on_carried_out(self, ready)
        if ready.deadline_ms != NO_DEADLINE:
            self._schedule_tick(ready.deadline_ms)
        core.advance(ready)

    def _schedule_tick(self, deadline_ms: int) -> None:
        if self._tick_deadline_ms != NO_DEADLINE and self._tick_deadline_ms <= deadline_ms:
            return
        self._tick_deadline_ms = deadline_ms
        self._arm_tick()

    def _arm_tick(self) -> None:
        self._tick_generation += 1
        when_us = self.clock.global_us_when(self._tick_deadline_ms, self.world.now_us)
        self.world.at(when_us, self._tick, self.incarnation, self._tick_generation)

    # --- disk -----------------------------------------------------------------------------------

    def _sync(self) -> None:
        self.store.sync()
        self._unsynced_keys.clear()
        self.last_sync_us = self.world.now_us
        self.observer.on_sync(self)

    def _os_writeback(self) -> None:
        """The kernel flushing dirty pages: runs whether the process is up, paused or down."""
        self._sync()
        self.world.after(self.disk.writeback_interval_us, self._os_writeback)

    # --- faults -------------------------------------------------------------------------------

    def pause(self) -> None:
        assert self.core is not None and not self.paused
        self.paused = True
        self.world.trace("pause", self.node_id)

    def resume(self) -> None:
        """SIGCONT: everything that queued up runs now, late and at once."""
        if not self.paused:
            return
        self.paused = False
        self.world.trace("resume", self.node_id, len(self._backlog))
        backlog, self._backlog = self._backlog, []
        for action, args in backlog:
            action(*args)
        self._pump()

    def jump_clock(self, delta_us: int) -> None:
        self.clock.jump(delta_us)
        self.world.trace("clock_jump", self.node_id, delta_us)
        if self.core is not None and self._tick_deadline_ms != NO_DEADLINE:
            self._arm_tick()

    def crash_during_next_persist(self, armed: ArmedCrash) -> None:
        """Crash while the next persist is in flight: written, not yet synced or acknowledged
        (the most dangerous instant, which a crash at a random time rarely hits)."""
        assert self.core is not None
        self._armed_crash = armed

    def _crash_mid_persist(self, incarnation: int) -> None:
        armed = self._armed_crash
        if incarnation != self.incarnation or armed is None:
            return
        self.crash(power_loss=armed.power_loss, torn_probability=armed.torn_probability)
        armed.after_crash()

    def lose_disk(self) -> None:
        """While down: the data directory is deleted; the node boots empty."""
        assert self.core is None
        self.store = MemoryStore(durability=self.store.durability,
                                 verify_crc=self.store.verify_crc)
        self._unsynced_keys.clear()
        self.world.trace("disk_lost", self.node_id)
        self.observer.on_disk_lost(self)

    def crash(self, *, power_loss: bool, torn_probability: float) -> None:
        """The process dies (``power_loss``: the machine loses power too)."""
        assert self.core is not None
        self.world.trace("crash", self.node_id, "power" if power_loss else "process")
        self.core = None
        self.incarnation += 1
        self.network.reset(self.node_id)
        self.paused = False
        self._outstanding = None
        self._routes.clear()
        self._backlog.clear()
        self._tick_deadline_ms = NO_DEADLINE
        self._armed_crash = None
        report = self.store.crash(self._disk_rng, power_loss=power_loss,
                                  torn_probability=torn_probability)
        assert report.pending_kept + report.pending_lost == len(self._unsynced_keys)
        damaged: list[frozenset[bytes] | None] = []
        if power_loss:      # what reached the platter is durable now; the rest is gone
            damaged = self._unsynced_keys[report.pending_kept - report.torn:]
            self._unsynced_keys.clear()
        lost_keys = None if None in damaged else frozenset().union(*damaged)
        self.observer.on_crash(self, report, lost_keys)

    def start(self) -> None:
        """Boot (or reboot) from what the store recovers."""
        assert self.core is None
        recovered = self.store.recover()
        self.observer.on_restart(self, recovered)
        rng = self.world.stream(f"core/{self.node_id}/{self.incarnation}")
        self.core = self.core_class(self.config, recovered, rng, self.now_ms())
        self.world.trace("start", self.node_id, recovered.last_position)
        self._schedule_tick(self.now_ms())
        self._pump()
