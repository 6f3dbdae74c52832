"""The node driver: the one place where a core, its storage, the network and the clients meet.

It runs the core contract (``core.api``) on the asyncio loop:

- client commands are proposed to the core as they are parsed; a ``kick`` schedules one pump
  per loop iteration, so commands from every connection that arrived together share a ``Ready``;
- the pump takes one ``Ready`` at a time: its writes go to the storage thread, and only when they
  are committed (fsync'd with ``durability = "fsync"``) are its messages sent, its replies
  delivered, its notes logged and ``advance`` called. Commands that arrive meanwhile wait in the
  core and form the next ``Ready`` — the group commit grows with the load by itself;
- ``tick`` runs at the deadline the core asked for.

The driver knows nothing of the mode: it looks the core class up in ``core.modes``. When the
cluster has other members it opens a ``net.peers.PeerNetwork``: peer messages are stepped into
the core as they arrive, and a ``Ready``'s messages are sent (after its writes are committed) by
their ``target``.

The clock (``now_ms``) is the wall clock plus ``clock_offset_ms``, clamped so it never goes
backwards. The offset is 0 unless a test moves it with ``CHORUS.DEBUG CLOCKSKEW`` (only with
``--enable-debug-commands``): a positive skew jumps the node's time ahead, a negative one stalls
it until the wall clock catches up. ``bugs`` switches on known defects of the core
(``KNOWN_BUGS``), so the checkers can be shown to catch them in real processes.

Shutdown (SIGTERM/SIGINT): stop accepting, let the pump finish the ``Ready`` in flight and any
that follow from commands already received, then close SQLite cleanly. A failed commit is fatal:
the node stops rather than acknowledge anything it could not persist.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import random
import resource
import secrets
import time
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from chorusdb import __version__, limits
from chorusdb.core.api import NO_DEADLINE, ClientCommand, CoreConfig, Probe, Ready
from chorusdb.core.leader_messages import ForwardReply
from chorusdb.core.modes import core_class
from chorusdb.net.peers import PeerNetwork
from chorusdb.net.protocol import thaw_reply
from chorusdb.server.config import Address, NodeConfig
from chorusdb.server.connection_commands import CONNECTION_COMMAND_NAMES, DEBUG_COMMAND_NAME
from chorusdb.server.metrics import NodeMetrics
from chorusdb.storage.sqlite_store import SqliteStore
from chorusdb.storage.thread import StorageThread

if TYPE_CHECKING:
    from chorusdb.server.clients import ClientConnection, Slot

log = logging.getLogger("chorusdb.node")

idle_check_interval_s = 1.0
# The cyclic garbage collector walks every tracked object on a full collection; a node holds
# every record in memory and makes no cycles on its hot path, so full collections of a large
# keyspace (~120 ms each at 10^5 keys) were 40 % of the event loop's time under load. The
# recovered data is frozen out of the collector's sight, and the young generation is collected
# less often (CPython's default threshold is 700 allocations).
gc_young_threshold_objects = 50_000
gc_middle_threshold_collections = 20
gc_old_threshold_collections = 100


class Node:
    """One running ChorusDB node; see the module docstring."""

    def __init__(self, config: NodeConfig, bugs: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.bugs = bugs
        self.clock_offset_ms = 0
        self.version = __version__
        self.run_id = secrets.token_hex(20)
        self.metrics = NodeMetrics(config.node_id, config.mode)
        self.metrics.durability_fsync = config.durability == "fsync"
        self.connection_command_names = CONNECTION_COMMAND_NAMES | {DEBUG_COMMAND_NAME}
        self.clients: set[ClientConnection] = set()
        self.started_monotonic = time.monotonic()
        self.loop: asyncio.AbstractEventLoop
        self.core = None
        self.storage: StorageThread | None = None
        self._client_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._waiting: dict[int, tuple[ClientConnection, Slot]] = {}
        self._metric_names: dict[bytes, str] = {}
        self._last_now_ms = 0
        self._pump_scheduled = False
        self._persisting = False
        self._tick_handle: asyncio.TimerHandle | None = None
        self._tick_deadline_ms = NO_DEADLINE
        self._servers: list[asyncio.base_events.Server] = []
        self._stopped = asyncio.Event()
        self._fatal: BaseException | None = None
        self.admin = None
        self.peers: PeerNetwork | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.config
        self.storage = StorageThread(
            lambda: SqliteStore(config.data_dir, durability=config.durability),
            on_commit=self.metrics.on_commit)
        recovered = await self.storage.start()
        gc.set_threshold(gc_young_threshold_objects, gc_middle_threshold_collections,
                         gc_old_threshold_collections)
        core_config = CoreConfig(node_id=config.node_id, members=config.member_ids,
                                 bugs=self.bugs,
                                 settings=config.core_settings)
        for bug in sorted(self.bugs):
            log.warning("node %s: KNOWN BUG switched on: %s (%s)", config.node_id, bug,
                        core_class(config.mode).KNOWN_BUGS[bug])
        self.core = core_class(config.mode)(core_config, recovered, random.Random(),
                                            self.now_ms())
        log.info("node %s: mode %s, recovered %d keys at log position %s, durability %s",
                 config.node_id, config.mode, len(recovered.records), recovered.last_position,
                 config.durability)
        log.info("node %s: write quorum %d of %d, election quorum %d: %s", config.node_id,
                 config.write_quorum, len(config.members), config.election_quorum,
                 "MAY LOSE acknowledged writes (durability os, or W + Q <= N)"
                 if config.may_lose_acknowledged_writes
                 else "no acknowledged write can be lost (durability fsync, W + Q > N)")
        del recovered
        gc.collect()
        gc.freeze()
        from chorusdb.server.clients import ClientConnection
        server = await self.loop.create_server(
            lambda: ClientConnection(self), config.client.host, config.client.port,
            reuse_address=True, backlog=1024)
        self._servers.append(server)
        others = {member.id: member.peer for member in config.members
                  if member.id != config.node_id}
        if others:
            if not config.cluster_secret:
                log.warning("node %s: no cluster.secret_file; peers authenticate with an empty "
                            "secret, so anything that reaches the peer port can join",
                            config.node_id)
            self.peers = PeerNetwork(node_id=config.node_id, cluster_id=config.cluster_id,
                                     secret=config.cluster_secret, listen=config.peer,
                                     peers=others, on_message=self._on_peer_message,
                                     rng=random.Random())
            await self.peers.start()
        from chorusdb.server.admin import AdminServer
        self.admin = AdminServer(self)
        await self.admin.start()
        if config.client_idle_timeout_s > 0:
            self.loop.call_later(idle_check_interval_s, self._close_idle_clients)
        self._schedule_tick(self.now_ms())

    def bound_client_address(self) -> Address:
        host, port = self._servers[0].sockets[0].getsockname()[:2]
        return Address(host, port)

    async def serve_until_stopped(self) -> None:
        await self._stopped.wait()
        if self._fatal is not None:
            raise self._fatal

    def request_stop(self) -> None:
        self._stopped.set()

    async def stop(self) -> None:
        """Graceful: stop accepting, finish what was received, close storage.

        It drains while a commit is in flight or a client still waits for a reply, not while
        the core merely has something to do: a replicated core always has (a heartbeat due, an
        election timer), and a leader whose followers stopped first would otherwise wait out
        the whole drain timeout."""
        for server in self._servers:
            server.close()
        for client in self.clients:             # what they sent already still completes
            if client.transport is not None and not client.transport.is_closing():
                client.transport.pause_reading()
        deadline = self.loop.time() + limits.shutdown_drain_timeout_s
        while (self._persisting or self._waiting) and self.loop.time() < deadline \
                and self._fatal is None:
            self._pump()
            await asyncio.sleep(0.005)
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.close()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self.admin is not None:
            await self.admin.stop()
        if self.peers is not None:
            await self.peers.stop()
        await self.storage.close()
        log.info("node %s stopped cleanly at log position %s", self.config.node_id,
                 self.core.status()["position"])

    # --- clock and ids ----------------------------------------------------------------------

    def now_ms(self) -> int:
        """The wall clock in ms plus ``clock_offset_ms``, never going backwards (the core
        contract's ``now_ms``)."""
        now = int(time.time() * 1000) + self.clock_offset_ms
        if now < self._last_now_ms:
            now = self._last_now_ms
        self._last_now_ms = now
        return now

    def skew_clock(self, delta_ms: int) -> int:
        """Move the clock by ``delta_ms`` (a test's fault); the new offset."""
        self.clock_offset_ms += delta_ms
        log.warning("node %s: clock skewed by %+d ms, offset now %+d ms", self.config.node_id,
                    delta_ms, self.clock_offset_ms)
        return self.clock_offset_ms

    def next_client_id(self) -> int:
        return next(self._client_ids)

    def metric_name(self, name: bytes) -> str:
        shown = self._metric_names.get(name)
        if shown is None:
            shown = name.decode("latin-1").lower()
            if len(self._metric_names) < len(CONNECTION_COMMAND_NAMES) + 256:
                self._metric_names[name] = shown
        return shown

    # --- the core contract --------------------------------------------------------------------

    def propose(self, command: ClientCommand, connection: ClientConnection, slot: Slot,
                now_ms: int) -> None:
        """Propose one client command; ``now_ms`` is read once per batch by the caller."""
        request_id = next(self._request_ids)
        self._waiting[request_id] = (connection, slot)
        self.core.propose(command, request_id, now_ms)

    def _on_peer_message(self, message: object) -> None:
        if type(message) is ForwardReply:        # the codec turned the reply's lists to tuples
            message = replace(message, value=thaw_reply(message.value))
        self.core.step(message, self.now_ms())
        self.kick()

    def kick(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._persisting or self._fatal is not None or not self.core.has_ready():
            return
        ready = self.core.ready()
        if ready.writes:
            self._persisting = True
            self.storage.submit(ready.writes).add_done_callback(partial(self._persisted, ready))
        else:
            self._carry_out(ready)

    def _persisted(self, ready: Ready, future: asyncio.Future) -> None:
        self._persisting = False
        error = future.exception()
        if error is not None:
            log.critical("storage commit failed, stopping the node: %s", error)
            self._fatal = error
            self._stopped.set()
            return
        self._carry_out(ready)

    def _carry_out(self, ready: Ready) -> None:
        if ready.messages:
            send = self.peers.send
            for message in ready.messages:
                send(message)
        touched = set()
        waiting = self._waiting
        for reply in ready.replies:
            entry = waiting.pop(reply.request_id, None)
            if entry is None:
                continue
            connection, slot = entry
            connection.deliver(slot, reply.value, reply.position)
            touched.add(connection)
        for connection in touched:
            connection.flush()
        for note in ready.notes:
            if not isinstance(note, Probe):
                log.info("note: %s", note)
        if ready.deadline_ms != NO_DEADLINE:
            self._schedule_tick(ready.deadline_ms)
        self.core.advance(ready)
        if self.core.has_ready():
            self.kick()

    def _schedule_tick(self, deadline_ms: int) -> None:
        if self._tick_handle is not None and self._tick_deadline_ms <= deadline_ms \
                and not self._tick_handle.cancelled():
            return
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        delay_s = max(0.0, (deadline_ms - self.now_ms()) / 1000)
        self._tick_deadline_ms = deadline_ms
        self._tick_handle = self.loop.call_later(delay_s, self._on_tick)

    def _on_tick(self) -> None:
        self._tick_handle = None
        self._tick_deadline_ms = NO_DEADLINE
        self.core.tick(self.now_ms())
        self.kick()

    def _close_idle_clients(self) -> None:
        now = self.loop.time()
        for client in list(self.clients):
            client.close_if_idle(now, self.config.client_idle_timeout_s)
        self.loop.call_later(idle_check_interval_s, self._close_idle_clients)

    # --- facts for INFO, ROLE and /status -----------------------------------------------------

    def is_writable_role(self) -> bool:
        return self.core.status()["role"] in ("standalone", "leader", "peer")

    def leader_client_address(self) -> Address | None:
        leader_id = self.core.status()["leader_id"]
        for member in self.config.members:
            if member.id == leader_id:
                return member.client
        return None

    def keyspace_counts(self) -> tuple[int, int]:
        status = self.core.status()
        return status.get("keys", 0), status.get("expires", 0)

    @staticmethod
    def resident_bytes() -> int:
        """Current resident set size (Linux /proc), else the peak the kernel reports."""
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def status(self) -> dict:
        """The /status document (DESIGN.md lists the fields scripts rely on)."""
        core = self.core.status()
        document = {
            "node_id": self.config.node_id,
            "cluster_id": self.config.cluster_id,
            "mode": self.config.mode,
            "version": self.version,
            "durability": self.config.durability,
            "client_address": str(self.config.client),
            "connected_clients": len(self.clients),
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
        }
        document.update(core)
        document["write_quorum"] = self.config.write_quorum
        document["election_quorum"] = self.config.election_quorum
        document["may_lose_acknowledged_writes"] = self.config.may_lose_acknowledged_writes
        if self.peers is not None:
            document["peers"] = self.peers.peer_status()
        return document
