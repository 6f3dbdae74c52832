"""Real clients for ``chorusdb chaos``: threads with redis-py connections, recording a history.

``ChaosWorkload`` runs ``clients`` threads against real nodes on loopback. Each thread is one
client (``c1``, ``c2``...) and makes the same decisions as the simulator's workers, through the
same code (``sim.workload.ClientLogic`` and ``KeyPool``): the key kinds and their rotation, the
operation mix, unique values, and what a reply means for the history, the client's process id
and the node it talks to. Only the transport is real:

- one redis-py ``Connection`` per thread, odd clients speaking RESP2 and even ones RESP3, with
  **no automatic retry** (``Retry(NoBackoff(), 0)``: a retried write would be sent twice, which
  the checkers would rightly call a duplicate) and ``timeout_s`` on connect and on every read;
- raw replies (``send_command`` / ``read_response``, no response callbacks), turned into
  ``replies`` values (``reply_value``) so one mapping judges them: a definite error is a
  ``fail``, ``-INDOUBT`` and any error of unknown class an ``info``;
- a reply that does not come within ``timeout_s``, or a connection that breaks after the command
  may have left, is an ``info`` (outcome unknown); the client then carries on under a new process
  id and may roam to another node, as the simulator's workers do after a timeout;
- a connection that cannot be opened is a ``fail`` (nothing was sent), and the client roams.
  After any ``fail`` the thread pauses ``refused_pause_s`` so a node without a leader is not
  hammered.

Clients are homed round-robin on the nodes in the order of ``addresses``; the history's ``node``
is the node a command was sent to.

**Session clients** (``session_clients=True``): each thread is instead a ``chorusdb.Client``
reading from followers, from any member or from the leader in turn, which routes writes to the
leader, retries through failovers (every write with a request id, so a retry is never applied
twice) and keeps a session token. Which member answered is the
client's choice, so the history's ``node`` is left empty; a call that raises after the
client's own retries is an ``info`` (it may have been applied), a definite error reply is judged
by its class as above. The reads of a client reading from the leader are linearizable (a member
that no longer leads refuses them), so they are recorded as such, not ``stale``: the
linearizability checker holds them to it. Such a history is held to the session guarantees as
well (``chaos.run`` adds the claim): every process is one session from first to last operation.

**One clock, one lock.** Record order must be real-time order and times must never go back, so
every record is appended under one lock with the time read inside it: nanoseconds of
``time.monotonic_ns()`` since ``started_ns`` (the caller's, or this object's creation). Anything
else that writes to the same recorder while threads run (the nemesis) must do it through
``note`` (or hold ``lock``), with ``now_ns`` as its clock.

**Stale reads.** A follower answers reads from what it has applied (the ``stale`` reads of the
simulator), and nothing in a reply says which node role answered it. With more than one node
every ``ok`` read is therefore recorded ``stale``: it is held to the consistent-prefix rules, not
to linearizability. One node answers every read itself, so its reads are held to everything.

**Final reads** (after heal and quiesce, which the caller waits for) read every key the clients
used on every node, recorded like the simulator's: a definite refusal (``TRYAGAIN`` while a
follower learns its commit position, ``NOTLEADER``) is recorded as failed and asked again, up
to ``final_read_attempts_max`` times within ``final_reads_s_max`` in all; a read that never gets
an answer raises ``FinalReadsIncomplete``, because without a final state there is nothing to
judge (the simulator calls that a liveness failure).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from chorusdb.client import Client as SessionClient
from chorusdb.core.api import ClientCommand
from chorusdb.replies import OK as OK_REPLY
from chorusdb.replies import Error
from chorusdb.sim.workload import ClientLogic, KeyPool, read_command, reply_shape_ok
from chorusdb.verify.history import FAIL, INFO, OK, HistoryRecorder, Value

Address = tuple[str, int]

refused_pause_s: Final = 0.02          # after a ``fail``, before the thread's next operation
stop_join_slack_s: Final = 2.0         # beyond the longest blocking call, when joining a thread
final_read_attempts_max: Final = 20    # one key on one node, refusals and timeouts together
final_read_retry_s: Final = 0.1        # wait before asking a refused final read again
final_reads_s_max: Final = 60.0        # every final read of a run together
value_padding_bytes: Final = 0         # real values carry only their unique part
READS: Final = frozenset({"get", "lrange"})
DIGEST_COMMAND: Final = ClientCommand(b"CHORUS.DIGEST", ())
session_retry_deadline_ms: Final = 5_000   # a session client's retries through one failover
SESSION_READS_FROM: Final = ("follower", "any", "leader")   # session clients in turn


class FinalReadsIncomplete(RuntimeError):
    """Some key could not be read on some node after heal: there is no final state to judge."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One command's fate on the wire: a reply (``value``, a ``replies`` value, ``Error`` for an
    error reply), or no reply although the command may have left (``lost``: outcome unknown), or
    no connection, so nothing was sent (``refused``)."""

    value: object = None
    lost: str | None = None
    refused: str | None = None


def error_text(error: RedisError) -> str:
    """The error reply as the server sent it: redis-py strips a class it knows (``ERR``,
    ``TRYAGAIN``...) into ``status_code``; others stay at the front of the message."""
    code = getattr(error, "status_code", None)
    return f"{code} {error}" if code else str(error)


def reply_value(command: ClientCommand, raw: object) -> object:
    """redis-py's parsed reply as a ``replies`` value. An error reply becomes ``Error``; once
    parsed, a simple string cannot be told from a bulk string, so ``SET``'s ``OK`` becomes the
    simple string it is."""
    if isinstance(raw, RedisError):        # an error redis-py returns rather than raises
        return Error(error_text(raw))
    if command.name == b"SET" and raw == b"OK":
        return OK_REPLY
    return raw


def exchange(connection: redis.Connection, command: ClientCommand) -> Exchange:
    """Send ``command`` on ``connection`` (opening it first if needed) and read its reply."""
    try:
        connection.connect()
    except (RedisError, OSError) as error:
        return Exchange(refused=f"not connected: {error}")
    try:
        connection.send_command(command.name, *command.args)
        raw = connection.read_response()
    except ResponseError as error:
        return Exchange(value=Error(error_text(error)))
    except RedisTimeoutError:
        return Exchange(lost="timeout")
    except (RedisError, OSError) as error:
        return Exchange(lost=f"connection lost: {error}")
    return Exchange(value=reply_value(command, raw))


def session_exchange(client: SessionClient, command: ClientCommand) -> Exchange:
    """``command`` through a session client, which retries on its own; what it raises in the
    end is an unknown outcome unless it is a definite error reply."""
    try:
        raw = client.execute_command(command.name, *command.args)
    except ResponseError as error:
        return Exchange(value=Error(error_text(error)))
    except (RedisError, OSError) as error:
        return Exchange(lost=f"gave up: {error}")
    if command.name == b"SET" and raw is True:      # redis-py's reading of +OK
        raw = b"OK"
    return Exchange(value=reply_value(command, raw))


@dataclass(slots=True)
class _Client:
    """One client thread's state: its decisions, its protocol and its open connection (or its
    session client)."""

    logic: ClientLogic
    protocol: int
    connection: redis.Connection | None = None
    connected_to: str | None = None
    session: SessionClient | None = None
    reads_linearizable: bool = False    # a session client reading from the leader

    def disconnect(self) -> None:
        if self.connection is not None:
            self.connection.disconnect()
        self.connection = None
        self.connected_to = None
        if self.session is not None:
            self.session.close()


class ChaosWorkload:
    """``clients`` real client threads and the history they record; see the module docstring."""

    def __init__(self, addresses: Mapping[str, Address], recorder: HistoryRecorder,
                 rng: random.Random, clients: int = 6, timeout_s: float = 1.0,
                 password: str | None = None, *, started_ns: int | None = None,
                 session_clients: bool = False) -> None:
        assert addresses and clients >= 1 and timeout_s > 0
        self.addresses = dict(addresses)
        self.recorder = recorder
        self.timeout_s = timeout_s
        self.password = password
        self.started_ns = time.monotonic_ns() if started_ns is None else started_ns
        self.lock = threading.Lock()       # guards the recorder, the key pool and the counters
        self.malformed_replies: list[str] = []
        self._reads_stale = len(self.addresses) > 1
        self._keys = KeyPool(random.Random(rng.getrandbits(64)))
        self._next_process = 0
        self._counts: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._closed = False
        node_ids = tuple(self.addresses)
        self._clients = [
            _Client(ClientLogic(endpoint=f"c{number}",
                                home_node=node_ids[(number - 1) % len(node_ids)],
                                node_ids=node_ids, rng=random.Random(rng.getrandbits(64)),
                                new_process=self._new_process,
                                value_padding_bytes=value_padding_bytes),
                    protocol=2 if number % 2 else 3)
            for number in range(1, clients + 1)]
        if session_clients:
            hosts = [f"{host}:{port}" for host, port in self.addresses.values()]
            for number, client in enumerate(self._clients):
                read_from = SESSION_READS_FROM[number % len(SESSION_READS_FROM)]
                client.session = SessionClient(
                    hosts, read_from=read_from, protocol=client.protocol, password=password,
                    retry_deadline_ms=session_retry_deadline_ms, request_ids="all")
                client.reads_linearizable = read_from == "leader"
        self._threads: list[threading.Thread] = []

    # --- clock and notes --------------------------------------------------------------------

    def now_ns(self) -> int:
        """The history's clock: nanoseconds since ``started_ns``."""
        return time.monotonic_ns() - self.started_ns

    def note(self, source: str, f: str, value: object = None, *, node: str | None = None) -> None:
        """Record a note (from the nemesis, or about a node) in order with the clients' records."""
        with self.lock:
            self.recorder.note(source, f, value, time=self.now_ns(), node=node)

    # --- running ----------------------------------------------------------------------------

    def start(self) -> None:
        assert not self._threads, "a workload runs once"
        for client in self._clients:
            thread = threading.Thread(target=self._run, args=(client,), daemon=True,
                                      name=f"chaos-{client.logic.endpoint}")
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Stop every client and wait for it, bounded: a command in flight finishes or times out
        first. A thread that still has not stopped records nothing more (its operation stays
        open in the history: outcome unknown)."""
        self._stopping.set()
        # Connect, the RESP3 handshake and one command each wait at most ``timeout_s``.
        deadline = time.monotonic() + 3 * self.timeout_s + stop_join_slack_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            self._closed = True

    def counts(self) -> dict[str, int]:
        """How many client operations completed ``ok``, ``fail`` and ``info`` so far."""
        with self.lock:
            return {outcome: self._counts[outcome] for outcome in (OK, FAIL, INFO)}

    def keys(self) -> dict[bytes, str]:
        """Every key the clients used, with its kind, in first-use order."""
        with self.lock:
            return dict(self._keys.kinds)

    def _new_process(self) -> int:
        self._next_process += 1
        return self._next_process

    def _run(self, client: _Client) -> None:
        logic = client.logic
        try:
            while not self._stopping.is_set():
                with self.lock:
                    if self._closed:
                        return
                    kind, key = self._keys.pick()
                    f, command, value = logic.operation(kind, key)
                    node = logic.target if client.session is None else None
                    self.recorder.invoke(logic.process, f, key, value, time=self.now_ns(),
                                         node=node)
                if client.session is not None:
                    result = session_exchange(client.session, command)
                else:
                    result = exchange(self._connection(client, node), command)
                with self.lock:
                    if self._closed:
                        return
                    outcome = self._settle(client, f, node, result)
                    self._counts[outcome] += 1
                if outcome == FAIL:
                    self._stopping.wait(refused_pause_s)
        finally:
            client.disconnect()

    def _settle(self, client: _Client, f: str, node: str | None, result: Exchange) -> str:
        """Record ``result`` for the client's open operation (under ``lock``); its outcome."""
        logic = client.logic
        now = self.now_ns()
        if result.refused is not None:
            self.recorder.fail(logic.process, time=now, error=result.refused, node=node)
            logic.roam()
            return FAIL
        if result.lost is not None:
            logic.record_lost_reply(self.recorder, time=now, error=result.lost, node=node)
            return INFO
        settled = logic.record_reply(self.recorder, f, result.value, time=now, node=node,
                                     stale=self._reads_stale and f in READS
                                     and not client.reads_linearizable)
        if settled.malformed is not None:
            self.malformed_replies.append(settled.malformed)
        return settled.outcome

    def _connection(self, client: _Client, node: str) -> redis.Connection:
        if client.connected_to != node:
            client.disconnect()
            client.connection = self._open(self.addresses[node], client.protocol)
            client.connected_to = node
        assert client.connection is not None
        return client.connection

    def _open(self, address: Address, protocol: int) -> redis.Connection:
        """A connection that is opened on first use and never retries anything by itself."""
        host, port = address
        return redis.Connection(host=host, port=port, protocol=protocol, password=self.password,
                                socket_timeout=self.timeout_s,
                                socket_connect_timeout=self.timeout_s,
                                retry=Retry(NoBackoff(), 0))

    # --- after heal ---------------------------------------------------------------------------

    def final_reads(self, addresses: Mapping[str, Address]) -> dict[str, dict[bytes, Value]]:
        """Every key the clients used, read on every node and recorded (module docstring):
        node -> key -> what the read returned (``None`` or ``()`` for a missing key, a list as a
        tuple), as the simulator keeps its final reads."""
        kinds = sorted(self.keys().items())
        deadline = time.monotonic() + final_reads_s_max
        reads: dict[str, dict[bytes, Value]] = {}
        unanswered: list[str] = []
        for node, address in addresses.items():
            connection = self._open(address, protocol=2)
            reads[node] = {}
            try:
                for key, kind in kinds:
                    answered, value = self._final_read(connection, node, key, kind, deadline)
                    if answered:
                        reads[node][key] = value
                    else:
                        unanswered.append(f"{key.decode('latin-1')} on {node}")
            finally:
                connection.disconnect()
        if unanswered:
            raise FinalReadsIncomplete(
                f"{len(unanswered)} final reads got no answer (first: {', '.join(unanswered[:5])})")
        return reads

    def _final_read(self, connection: redis.Connection, node: str, key: bytes, kind: str,
                    deadline: float) -> tuple[bool, Value]:
        """``(True, value)`` once ``node`` answers for ``key``; ``(False, None)`` if it never does."""
        f, command = read_command(kind, key)
        for _ in range(final_read_attempts_max):
            if time.monotonic() > deadline:
                break
            with self.lock:
                process = self._new_process()
                self.recorder.invoke(process, f, key, time=self.now_ns(), node=node)
            result = exchange(connection, command)
            with self.lock:
                now = self.now_ns()
                value = result.value
                if result.refused is not None:
                    self.recorder.fail(process, time=now, error=result.refused, node=node)
                elif result.lost is not None:
                    self.recorder.info(process, time=now, error=result.lost, node=node)
                elif isinstance(value, Error):
                    self.recorder.error(process, time=now, error=value.text, node=node)
                elif not reply_shape_ok(f, value):
                    self.malformed_replies.append(f"{node} answered {f} with {value!r}")
                    self.recorder.info(process, time=now, error=f"malformed reply {value!r}",
                                       node=node)
                else:
                    final = tuple(value) if isinstance(value, list) else value
                    self.recorder.ok(process, time=now, value=final, node=node)
                    return True, final
            time.sleep(final_read_retry_s)
        return False, None

    def digests(self, addresses: Mapping[str, Address]) -> dict[str, str]:
        """Per node, ``CHORUS.DIGEST`` of all its data; a node that cannot answer gets a text
        saying why, which no digest equals (convergence then fails, visibly)."""
        digests = {}
        for node, address in addresses.items():
            connection = self._open(address, protocol=2)
            try:
                result = exchange(connection, DIGEST_COMMAND)
            finally:
                connection.disconnect()
            if isinstance(result.value, bytes):
                digests[node] = result.value.decode()
            elif isinstance(result.value, Error):
                digests[node] = f"error: {result.value.text}"
            else:
                digests[node] = f"no digest: {result.lost or result.refused or result.value!r}"
        return digests

