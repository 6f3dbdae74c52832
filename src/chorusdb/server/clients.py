"""The RESP front door: one asyncio ``Protocol`` per client connection.

Every ``data_received`` parses all complete commands in the chunk at once, answers the
connection-level ones (PING, HELLO, AUTH, ...) on the spot, proposes the data commands to the
node, and writes every reply that is ready with a single ``transport.write``. Replies keep the
order of the commands even though data commands complete later (after the group commit): each
command takes a slot in a FIFO, and the FIFO is flushed from its head as slots fill.

A client that pipelines faster than the node commits is paused (its socket is not read) once
``pending_replies_max`` of its replies are outstanding, and resumed when half are written.
A client that sends garbage gets ``-ERR Protocol error: ...`` and is disconnected, as Redis does;
nothing it sent before the error is lost, nothing after it is run. A client that stops reading
its replies is disconnected once ``client_output_buffer_bytes_max`` is queued. A client that
disconnects mid-command simply goes away: its proposed commands still complete (they may have
been acknowledged to nobody) and their replies are dropped.

``CHORUS.WAITPOS`` blocks its connection, as Redis's blocking commands do: the commands that
follow it (already parsed, or still in the socket, which is not read meanwhile) are proposed
only once it has answered, so a read pipelined after it sees the position it waited for.
``CHORUS.TOKEN`` is answered in order too: its value is the core's applied position raised to
the connection's last write, taken when every earlier reply of the connection is in — so a
forwarded write whose reply came late still counts. Together they make a session read one round
trip: ``CHORUS.WAITPOS <token> ...``, the read, ``CHORUS.TOKEN``. A ``CHORUS.WAITPOS`` also sets
the connection's read level, like ``CHORUS.CONSISTENCY``: linearizable when it ends with
``LINEARIZABLE``, stale otherwise; every command proposed carries the level in force.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from chorusdb import limits
from chorusdb.core.api import ClientCommand
from chorusdb.core.model import Position
from chorusdb.replies import Error
from chorusdb.server.connection_commands import ConnectionState, run_connection_command
from chorusdb.wire.resp import RespParser, encode_replies

if TYPE_CHECKING:
    from chorusdb.server.node import Node

PENDING = object()
NOAUTH = Error("NOAUTH Authentication required.")
ALLOWED_BEFORE_AUTH = frozenset({b"AUTH", b"HELLO", b"QUIT", b"RESET"})
WAIT_POSITION_NAME = b"CHORUS.WAITPOS"
BLOCKING_COMMAND_NAMES = frozenset({WAIT_POSITION_NAME})
TOKEN_COMMAND_NAME = b"CHORUS.TOKEN"
LINEARIZABLE = b"LINEARIZABLE"


class Slot:
    """One command's place in a connection's reply order, and the protocol version (2 or 3)
    its reply is encoded in: the one in force when the command arrived (HELLO may change it for
    the commands after it while earlier replies are still pending)."""

    __slots__ = ("value", "name", "started", "protocol", "is_token")

    def __init__(self, value: object, name: str, started: float, protocol: int,
                 is_token: bool = False) -> None:
        self.value = value
        self.name = name
        self.started = started
        self.protocol = protocol
        self.is_token = is_token        # CHORUS.TOKEN: raised to the last write when flushed


class ClientConnection(asyncio.Protocol):
    """One client; see the module docstring."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.parser = RespParser()
        self.state = ConnectionState(client_id=node.next_client_id(),
                                     authenticated=not node.config.requirepass)
        self.slots: deque[Slot] = deque()
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self.reading_paused = False
        self.last_write_position: Position | None = None    # for WAIT and CHORUS.POSITION
        self.last_activity = 0.0
        self.blocked_by: Slot | None = None         # a blocking command not answered yet
        self.held: deque[list[bytes]] = deque()     # commands parsed while blocked
        self.held_error: str | None = None          # a protocol error that follows them

    # --- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        metrics = self.node.metrics
        metrics.connections_total += 1
        if len(self.node.clients) >= self.node.config.clients_max:
            metrics.rejected_connections += 1
            transport.write(b"-ERR max number of clients reached\r\n")  # type: ignore[attr-defined]
            transport.close()
            self.closing = True
            return
        peer = transport.get_extra_info("peername")
        self.state.address = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.node.clients.add(self)
        metrics.connected_clients = len(self.node.clients)
        self.last_activity = self.node.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.node.clients.discard(self)
        self.node.metrics.connected_clients = len(self.node.clients)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        node = self.node
        node.metrics.bytes_in += len(data)
        self.last_activity = node.loop.time()
        self.parser.receive_data(data)
        self._drain()
        self.flush()

    def _drain(self) -> None:
        """Run the complete commands the parser holds, as long as fewer than
        ``pending_replies_max`` replies are waiting; above that, stop reading from the socket
        until ``flush`` has written enough of them (a client cannot queue unbounded work)."""
        node = self.node
        now = node.loop.time()
        now_ms = node.now_ms()
        parser = self.parser
        while not self.closing:
            room = limits.pending_replies_max - len(self.slots)
            if room <= 0 or self.blocked_by is not None:
                if not self.reading_paused and self.transport is not None:
                    self.transport.pause_reading()
                    self.reading_paused = True
                return
            wanted = min(room, limits.commands_per_batch_max)
            from_held = bool(self.held) or self.held_error is not None
            if from_held:
                commands = [self.held.popleft() for _ in range(min(wanted, len(self.held)))]
                error_message = None
                if not self.held:
                    error_message, self.held_error = self.held_error, None
            else:
                commands, error = parser.next_events(wanted)
                error_message = None if error is None else error.message
            proposed = False
            for done, args in enumerate(commands, start=1):
                proposed |= self._dispatch(args, now, now_ms)
                if self.closing:
                    break
                if self.blocked_by is not None and (done < len(commands)
                                                    or error_message is not None):
                    self.held.extendleft(reversed(commands[done:]))
                    self.held_error, error_message = error_message, None
                    break
            if proposed:
                node.kick()
            if error_message is not None:
                node.metrics.protocol_errors += 1
                self.slots.append(Slot(Error(f"ERR Protocol error: {error_message}"),
                                       "protocol-error", now, self.state.protocol))
                self.closing = True
            if len(commands) < wanted and not from_held:
                return

    # --- commands ---------------------------------------------------------------------------

    def _dispatch(self, args: list[bytes], now: float, now_ms: int) -> bool:
        """Queue one command; returns True if it was proposed to the core."""
        name = args[0].upper()
        state = self.state
        if not state.authenticated and name not in ALLOWED_BEFORE_AUTH:
            self.slots.append(Slot(NOAUTH, self.node.metric_name(name), now, state.protocol))
            return False
        if name in self.node.connection_command_names:
            protocol = state.protocol
            value = run_connection_command(self.node, state, name, args)
            if name == b"HELLO" and not isinstance(value, Error):
                protocol = state.protocol           # HELLO answers in the protocol it chose
            self.slots.append(Slot(value, self.node.metric_name(name), now, protocol))
            if state.quit_requested:
                self.closing = True
            return False
        if name == b"CHORUS.POSITION" and len(args) == 1 and self.last_write_position is not None:
            self.slots.append(Slot(str(self.last_write_position).encode(),
                                   self.node.metric_name(name), now, state.protocol))
            return False
        if name == WAIT_POSITION_NAME:          # it sets the read level of what follows
            state.linearizable_reads = len(args) > 4 and args[-1].upper() == LINEARIZABLE
        command = ClientCommand(name, tuple(args[1:]), state.linearizable_reads)
        if name == b"WAIT" and len(args) == 3:
            command = self._wait_for_last_write(args)
        slot = Slot(PENDING, self.node.metric_name(name), now, state.protocol,
                    is_token=name == TOKEN_COMMAND_NAME)
        self.slots.append(slot)
        if name in BLOCKING_COMMAND_NAMES:
            self.blocked_by = slot
        self.node.propose(command, self, slot, now_ms)
        return True

    def _wait_for_last_write(self, args: list[bytes]) -> ClientCommand:
        """WAIT n timeout -> CHORUS.WAITREPLICAS n timeout epoch index for the connection's last
        write. While earlier commands of this connection are still unanswered (pipelined), the
        position of their writes is not known yet: ``-1 -1`` asks for the log's end as it is
        when WAIT runs, which covers them (and maybe more)."""
        if any(slot.value is PENDING for slot in self.slots):
            epoch, index = b"-1", b"-1"
        elif self.last_write_position is None:
            epoch, index = b"0", b"0"
        else:
            epoch = str(self.last_write_position.epoch).encode()
            index = str(self.last_write_position.index).encode()
        return ClientCommand(b"CHORUS.WAITREPLICAS", (args[1], args[2], epoch, index))

    def deliver(self, slot: Slot, value: object, position: Position | None) -> None:
        """Called by the node when a proposed command's reply is ready; ``position`` is where
        its write landed in the log (``None``: it wrote nothing)."""
        slot.value = value
        if position is not None and (self.last_write_position is None
                                     or position > self.last_write_position):
            self.last_write_position = position
        if slot is self.blocked_by:
            self.blocked_by = None
            # Not now: the node is delivering a Ready, and proposals belong to the next one.
            self.node.loop.call_soon(self._unblock)

    def _raise_to_last_write(self, value: object) -> object:
        """A ``CHORUS.TOKEN`` reply (the node's applied position), raised to the connection's
        last write."""
        if not isinstance(value, bytes) or self.last_write_position is None:
            return value
        epoch, index = value.split(b":")
        return str(max(Position(int(epoch), int(index)), self.last_write_position)).encode()

    def _unblock(self) -> None:
        """Propose what the blocking command held back, and read the socket again."""
        if self.closing or self.blocked_by is not None:
            return
        self._drain()
        if self.blocked_by is None and self.reading_paused and self.transport is not None \
                and len(self.slots) < limits.pending_replies_max // 2:
            self.reading_paused = False
            self.transport.resume_reading()
        self.flush()

    def flush(self) -> None:
        """Write every reply at the head of the FIFO that is ready, in one write."""
        slots = self.slots
        if not slots or slots[0].value is PENDING:
            if self.closing and not slots and self.transport is not None:
                self.transport.close()
            return
        runs: list[tuple[int, list[object]]] = []     # consecutive replies of one protocol
        observe = self.node.metrics.observe_command
        now = self.node.loop.time()
        while slots and slots[0].value is not PENDING:
            slot = slots.popleft()
            if slot.is_token:
                slot.value = self._raise_to_last_write(slot.value)
            if not runs or runs[-1][0] != slot.protocol:
                runs.append((slot.protocol, []))
            runs[-1][1].append(slot.value)
            observe(slot.name, now - slot.started)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if len(runs) == 1:
            payload = encode_replies(runs[0][1], runs[0][0])
        else:
            payload = b"".join(encode_replies(values, protocol) for protocol, values in runs)
        self.node.metrics.bytes_out += len(payload)
        transport.write(payload)
        if transport.get_write_buffer_size() > limits.client_output_buffer_bytes_max:
            transport.close()   # a client that does not read its replies
            return
        if self.closing and not slots:
            transport.close()
        elif self.reading_paused and self.blocked_by is None \
                and len(slots) < limits.pending_replies_max // 2:
            self.reading_paused = False
            transport.resume_reading()
            self._drain()
            if slots and slots[0].value is not PENDING:
                self.flush()

    def close_if_idle(self, now: float, idle_timeout_s: float) -> None:
        if not self.slots and now - self.last_activity > idle_timeout_s and self.transport:
            self.transport.close()
