"""Simulated clients: Jepsen-style workers issuing unique-valued operations and timing out.

A *client worker* (endpoint ``c1``, ``c2``...) lives near one home node and runs one operation
at a time, each under a *process* id in the history. The worker sends the command over the
simulated network, waits for the reply or its timeout, records the outcome and thinks for a
while before the next one. A timeout is an ``info`` (the outcome is unknown: the command may
still run, or already have run), and the worker then carries on under a new process id, which is
how Jepsen keeps "one outstanding operation per process" true.

Operations, by kind of key (a key keeps one kind for its whole life, so no WRONGTYPE):

- registers: ``SET k v`` with a value never written before (``c<worker>-<seq>``, padded with
  dots to the seed's value size, so a torn record more often damages a value), ``GET k``,
  ``DEL k``;
- lists: ``RPUSH k e`` with a unique element, ``LRANGE k 0 -1`` (the list-append workload);
- counters: ``INCRBY k d`` and ``GET k``.

Keys rotate: a few keys of each kind are active at a time and each retires after a bounded
number of operations, so every key's history stays short enough for the linearizability search
(which is exponential in the number of concurrent operations on one key).

Replies map to outcomes as the history module defines: a definite error (``replies``'s
``DEFINITE_ERROR_CLASSES``) is a ``fail``, any other error an ``info``. After a ``fail`` that says
"not here" (``NOTLEADER``, ``TRYAGAIN``, ``NOQUORUM``), and after a timeout, the worker may move to
another node: clients can target any node, which replicated modes need.

A reply of an unexpected shape (an int for a ``SET``) is a protocol bug: it is recorded as an
``info`` and reported by the run as an anomaly of its own.

What a client *decides* is shared with the real-process clients of ``chaos.workload``: the key
pool (``KeyPool``, kinds and rotation), the operation mix and unique values
(``ClientLogic.operation``), and what a reply, a timeout or a lost reply means for the history,
the process id and the target node (``ClientLogic.record_reply``, ``record_lost_reply``). Only
the transport differs: simulated messages and timers here, redis-py connections and threads
there. Each draws from the ``random.Random`` it is given, in the same order, so a simulator
seed replays exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from chorusdb.core.api import ClientCommand
from chorusdb.replies import Error, Simple
from chorusdb.sim.network import Network
from chorusdb.sim.node import Request, Response
from chorusdb.sim.world import World
from chorusdb.verify.history import INFO, OK, HistoryRecorder

REGISTER = "register"
LIST = "list"
COUNTER = "counter"
KEY_KINDS = (REGISTER, LIST, COUNTER)
KEY_PREFIXES = {REGISTER: b"reg-", LIST: b"list-", COUNTER: b"ctr-"}

# (f, weight) per kind of key; writes dominate so losses have something to lose.
OPERATION_MIX = {
    REGISTER: (("set", 45), ("get", 45), ("del", 10)),
    LIST: (("rpush", 60), ("lrange", 40)),
    COUNTER: (("incrby", 50), ("get", 50)),
}
KIND_WEIGHTS = ((REGISTER, 45), (LIST, 40), (COUNTER, 15))
KIND_NAMES = [kind for kind, _ in KIND_WEIGHTS]
KIND_WEIGHT_VALUES = [weight for _, weight in KIND_WEIGHTS]
CHAOS = "chaos"
LIVENESS = "liveness"

active_keys_per_kind = 3
operations_per_key_min = 20
operations_per_key_max = 60        # keeps each key's linearizability search small
incrby_delta_max = 1000
roam_after_timeout_probability = 0.5
ECHOED_WRITES = frozenset({"set", "rpush", "del"})   # history echoes the invocation's value
ROAMING_ERROR_CLASSES = frozenset({"NOTLEADER", "TRYAGAIN", "NOQUORUM"})


@dataclass(frozen=True, slots=True)
class WorkloadShape:
    """How hard and how long the clients push, drawn per seed."""

    clients_per_node: int
    operations_max: int           # operations invoked during chaos, all workers together
    think_us_mean: int            # pause between one completion and the next invocation
    burst_probability: float      # chance that a worker skips its think time
    timeout_us: int               # a reply later than this is an ``info``
    liveness_ok_operations: int   # successes each worker needs after heal
    value_padding_bytes: int      # filler after the unique part of every written value


def read_command(kind: str, key: bytes) -> tuple[str, ClientCommand]:
    """The history ``f`` and the command that reads a whole key of ``kind``."""
    if kind == LIST:
        return "lrange", ClientCommand(b"LRANGE", (key, b"0", b"-1"))
    return "get", ClientCommand(b"GET", (key,))


def reply_shape_ok(f: str, value: object) -> bool:
    """Whether a non-error reply to ``f`` has the shape Redis gives it."""
    if f == "set":
        return value == Simple("OK")
    if f == "get":
        return value is None or isinstance(value, bytes)
    if f in ("del", "incrby"):
        return isinstance(value, int)
    if f == "rpush":
        return isinstance(value, int) and value >= 1
    assert f == "lrange", f"no reply shape for {f}"
    return isinstance(value, list) and all(isinstance(item, bytes) for item in value)


@dataclass(slots=True)
class ActiveKey:
    key: bytes
    operations_left: int


class KeyPool:
    """The active keys of each kind and how many operations each has left."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kinds: dict[bytes, str] = {}       # every key ever used, in first-use order
        self._numbers = {kind: 0 for kind in KEY_KINDS}
        self._active = {kind: [self._fresh(kind) for _ in range(active_keys_per_kind)]
                        for kind in KEY_KINDS}

    def _fresh(self, kind: str) -> ActiveKey:
        self._numbers[kind] += 1
        key = KEY_PREFIXES[kind] + str(self._numbers[kind]).encode()
        self.kinds[key] = kind
        return ActiveKey(key, self.rng.randint(operations_per_key_min, operations_per_key_max))

    def pick(self) -> tuple[str, bytes]:
        """A kind and one of its active keys; a key that used up its operations retires."""
        rng = self.rng
        kind = rng.choices(KIND_NAMES, KIND_WEIGHT_VALUES)[0]
        slots = self._active[kind]
        slot_index = rng.randrange(len(slots))
        active = slots[slot_index]
        active.operations_left -= 1
        if active.operations_left <= 0:
            slots[slot_index] = self._fresh(kind)
        return kind, active.key


@dataclass(frozen=True, slots=True)
class Settled:
    """How a reply was recorded: its history ``outcome`` (``ok``, ``fail`` or ``info``) and, for a
    reply of the wrong shape, what was wrong (``malformed``)."""

    outcome: str
    malformed: str | None = None


class ClientLogic:
    """What one client decides, whatever carries its commands (module docstring).

    It knows its ``endpoint`` (``c<n>``, the prefix of its unique values), the node it sends to
    (``target``), its current history ``process`` and its write ``sequence``. Every random choice
    comes from ``rng``; ``new_process`` hands out process ids unique in the whole history.
    """

    def __init__(self, *, endpoint: str, home_node: str, node_ids: tuple[str, ...],
                 rng: random.Random, new_process: Callable[[], int],
                 value_padding_bytes: int) -> None:
        self.endpoint = endpoint
        self.target = home_node
        self.node_ids = node_ids
        self.rng = rng
        self._new_process = new_process
        self.value_padding_bytes = value_padding_bytes
        self.process = new_process()
        self.sequence = 0

    def operation(self, kind: str, key: bytes) -> tuple[str, ClientCommand, object]:
        """The next operation on ``key``: its history ``f``, its command and its argument."""
        rng = self.rng
        mix = OPERATION_MIX[kind]
        f = rng.choices([name for name, _ in mix], [weight for _, weight in mix])[0]
        if f in ("get", "lrange"):
            _, command = read_command(kind, key)
            return f, command, None
        if f == "del":
            return f, ClientCommand(b"DEL", (key,)), None
        if f == "incrby":
            delta = rng.randint(1, incrby_delta_max)
            return f, ClientCommand(b"INCRBY", (key, str(delta).encode())), delta
        self.sequence += 1
        value = f"{self.endpoint}-{self.sequence}".encode()
        value += b"." * self.value_padding_bytes
        name = b"SET" if f == "set" else b"RPUSH"
        return f, ClientCommand(name, (key, value)), value

    def record_reply(self, recorder: HistoryRecorder, f: str, value: object, *, time: int,
                     node: str, stale: bool = False) -> Settled:
        """Record the reply ``value`` (a ``replies`` value) to the open operation ``f``.

        An error is a ``fail`` or an ``info`` by its class; after an ``info`` the client goes on
        as a new process (and may roam), after a "not here" ``fail`` it roams. A reply of the
        wrong shape is an ``info`` too, and says what was wrong.
        """
        if isinstance(value, Error):
            outcome = recorder.error(self.process, time=time, error=value.text, node=node).type
            if outcome == INFO:
                self._become_new_process()
            elif value.error_class in ROAMING_ERROR_CLASSES:
                self.roam()
            return Settled(outcome)
        if reply_shape_ok(f, value):
            if f in ECHOED_WRITES:
                recorder.ok(self.process, time=time, node=node)
            else:
                result = tuple(value) if isinstance(value, list) else value
                recorder.ok(self.process, time=time, value=result, node=node, stale=stale)
            return Settled(OK)
        malformed = f"{node} answered {f} with {value!r}"
        self.record_lost_reply(recorder, time=time, error=f"malformed reply {value!r}", node=node)
        return Settled(INFO, malformed)

    def record_lost_reply(self, recorder: HistoryRecorder, *, time: int, error: str,
                          node: str) -> None:
        """The reply never came (a timeout, a dropped connection): the outcome is unknown, so
        the client goes on as a new process, and may roam."""
        recorder.info(self.process, time=time, error=error, node=node)
        self._become_new_process()

    def _become_new_process(self) -> None:
        self.process = self._new_process()
        if self.rng.random() < roam_after_timeout_probability:
            self.roam()

    def roam(self) -> None:
        """Send to a node chosen at random from now on (possibly the same one)."""
        self.target = self.rng.choice(self.node_ids)


@dataclass(slots=True)
class PendingOperation:
    """A worker's operation in flight: the request that carries it and where it went."""

    request_id: int
    f: str
    node_id: str


class Workload:
    """Every client worker, the key pool, and the operation budget; see the module docstring."""

    def __init__(self, *, world: World, network: Network, recorder: HistoryRecorder,
                 node_ids: tuple[str, ...], shape: WorkloadShape) -> None:
        self.world = world
        self.network = network
        self.recorder = recorder
        self.node_ids = node_ids
        self.shape = shape
        self.rng = world.streams["workload"]
        self.keys = KeyPool(self.rng)
        self.phase = CHAOS
        self.invoked = 0
        self.malformed_replies: list[str] = []
        self._next_process = 0
        self._next_request_id = 0
        self.clients = [
            ClientWorker(self, f"c{number}", node_ids[(number - 1) // shape.clients_per_node])
            for number in range(1, shape.clients_per_node * len(node_ids) + 1)]

    def new_process(self) -> int:
        self._next_process += 1
        return self._next_process

    def new_request_id(self) -> int:
        self._next_request_id += 1
        return self._next_request_id

    def start(self) -> None:
        for client in self.clients:
            client.think()

    def start_liveness(self) -> None:
        """After heal: every worker must get ``liveness_ok_operations`` successes."""
        self.phase = LIVENESS
        for client in self.clients:
            client.ok_since_heal = 0
            if client.pending is None:
                client.think()

    def liveness_reached(self) -> bool:
        return all(client.finished for client in self.clients)

    def may_invoke(self) -> bool:
        """During chaos, until the operation budget is spent; after heal, always."""
        return self.phase == LIVENESS or self.invoked < self.shape.operations_max


class ClientWorker(ClientLogic):
    """One simulated client worker (endpoint ``c<n>``); see the module docstring."""

    def __init__(self, workload: Workload, endpoint: str, home_node: str) -> None:
        super().__init__(endpoint=endpoint, home_node=home_node, node_ids=workload.node_ids,
                         rng=workload.rng, new_process=workload.new_process,
                         value_padding_bytes=workload.shape.value_padding_bytes)
        self.workload = workload
        self.pending: PendingOperation | None = None
        self.ok_since_heal = 0
        self._thinking = False
        workload.network.attach(endpoint, self.receive)

    @property
    def finished(self) -> bool:
        return self.ok_since_heal >= self.workload.shape.liveness_ok_operations

    def think(self) -> None:
        if self._thinking:
            return
        workload = self.workload
        rng = workload.rng
        delay_us = 0
        if rng.random() >= workload.shape.burst_probability:
            delay_us = int(rng.expovariate(1.0 / workload.shape.think_us_mean))
        self._thinking = True
        workload.world.after(delay_us, self._invoke)

    def _invoke(self) -> None:
        self._thinking = False
        workload = self.workload
        if self.pending is not None or not workload.may_invoke():
            return
        if workload.phase == LIVENESS and self.finished:
            return
        kind, key = workload.keys.pick()
        f, command, value = self.operation(kind, key)
        request_id = workload.new_request_id()
        workload.invoked += 1
        workload.recorder.invoke(self.process, f, key, value, time=workload.world.now_us * 1000,
                                 node=self.target)
        self.pending = PendingOperation(request_id, f, self.target)
        workload.world.trace("invoke", self.endpoint, f"{request_id} {f} {key!r} {value!r}")
        workload.network.send(self.endpoint, self.target, Request(request_id, command))
        workload.world.after(workload.shape.timeout_us, self._timeout, request_id)

    def receive(self, source: str, payload: object) -> None:
        assert isinstance(payload, Response)
        pending = self.pending
        if pending is None or pending.request_id != payload.request_id:
            return          # the answer to an operation that already timed out
        workload = self.workload
        self.pending = None
        workload.world.trace("reply", self.endpoint, f"{payload.request_id} {payload.value!r}")
        settled = self.record_reply(workload.recorder, pending.f, payload.value,
                                    time=workload.world.now_us * 1000, node=payload.node_id,
                                    stale=payload.stale)
        if settled.outcome == OK:
            self.ok_since_heal += 1
        if settled.malformed is not None:
            workload.malformed_replies.append(settled.malformed)
        self.think()

    def _timeout(self, request_id: int) -> None:
        pending = self.pending
        if pending is None or pending.request_id != request_id:
            return
        workload = self.workload
        self.pending = None
        workload.world.probe("client_timeout")
        workload.world.trace("timeout", self.endpoint, request_id)
        self.record_lost_reply(workload.recorder, time=workload.world.now_us * 1000,
                               error="timeout", node=pending.node_id)
        self.think()
