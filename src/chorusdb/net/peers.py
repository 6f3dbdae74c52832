"""``PeerNetwork``: the authenticated TCP links between one node and its peers.

One TCP connection per direction (DESIGN.md): a node **dials** every peer at the address its
own configuration gives and sends its messages over that outbound connection; it **receives**
on the connections its peers dialled into its listening socket. Neither side ever needs to
decide which of two connections between the same pair wins, and a proxy put on one address
cuts or delays exactly one direction.

Handshake. Every new connection starts with the mutual challenge-response of
``net.protocol`` (``Challenge``, ``Hello``, ``Welcome`` or ``Refused``): the acceptor checks the
dialer's cluster id, that its node id is one of this node's peers, the protocol version and its
proof of the cluster secret; the dialer checks that it reached the node it dialled and the
acceptor's proof. Handshake frames are read with a small frame bound
(``handshake_frame_bytes_max``), so a stranger cannot make a node buffer a large frame, at most
``handshakes_pending_max`` connections may be in their handshake at once, and a handshake that
takes longer than ``handshake_timeout_s`` is abandoned. Any failure closes the connection and
logs one line that names the peer and says what to check; the same failure repeating is logged
at debug level only, so a misconfigured pair does not flood the log while the dialer retries.
A new authenticated inbound connection from a peer replaces the one it had (the newest is from
the peer's live process).

Sending. ``send`` routes by ``message.target`` and never blocks: the frame is appended to the
outbound connection's queue and one ``transport.writelines`` per event-loop iteration writes
every frame queued meanwhile (a ``Ready``'s messages leave in one system call). While the
transport is over its high-water mark (``pause_writing``), frames stay in the queue, which is
bounded by ``queue_bytes_max`` (``peer_queue_bytes_max`` by default). A message for a peer that
is not connected, or whose queue is full, is **dropped and counted**: the core retransmits on
its own timers and tolerates loss, while a queue that grew during an outage would deliver
stale traffic and hold memory without bound. Frames still queued when a connection closes are
counted as dropped too.

Receiving. Frames are decoded with ``FrameDecoder(PEER_CODEC)`` and each message is handed to
``on_message`` on the event loop, in order. A malformed frame, a message whose ``source`` is not
the authenticated peer or whose ``target`` is not this node closes the connection.

Reconnecting. One task per peer dials, waits for the connection to close, and dials again after
an exponential backoff (``reconnect_delay_initial_s`` doubling to ``reconnect_delay_max_s``, each
delay shortened by up to ``reconnect_jitter_fraction`` drawn from the injected ``rng``, so peers
that lost each other together do not retry in lockstep). The backoff starts over after every
successful handshake. ``stop`` cancels the tasks and aborts every connection.

Addresses are duck-typed (anything with ``host`` and ``port``, such as ``server.config.Address``,
which this layer may not import); ``bound_address`` returns the listener's address as an
instance of the type ``listen`` was given as.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import secrets
import socket
from collections.abc import Callable, Mapping
from functools import partial
from typing import Protocol

from chorusdb import limits
from chorusdb.net.protocol import (
    PEER_CODEC,
    Challenge,
    Hello,
    Refused,
    Welcome,
    acceptor_proof,
    dialer_proof,
    nonce_bytes,
)
from chorusdb.wire.frames import FrameDecoder, FrameError, encode_frame
from chorusdb.wire.resp import NEED_DATA

log = logging.getLogger("chorusdb.net")

peer_queue_bytes_max = 64 * 1024 * 1024
"""Encoded frames waiting for one peer's socket; beyond it new messages are dropped."""
connect_timeout_s = 5.0
"""Time a TCP connect to a peer may take."""
handshake_timeout_s = 5.0
"""Time from a connection's start to the end of its handshake, on either side."""
handshake_frame_bytes_max = 4096
"""Largest frame read before the peer is authenticated (a ``Hello`` is well under 1 KiB)."""
handshakes_pending_max = 64
"""Inbound connections in their handshake at once; more are closed on arrival."""
reconnect_delay_initial_s = 0.05
"""Delay before the first redial after a failure or a lost connection."""
reconnect_delay_max_s = 2.0
"""The doubling backoff between redials stops growing here."""
reconnect_jitter_fraction = 0.5
"""Each delay is shortened by a random fraction up to this, drawn from the injected ``rng``."""
stop_timeout_s = 5.0
"""Time ``stop`` waits for aborted connections to report that they closed."""

OUTBOUND_CONNECTED = "connected"
OUTBOUND_CONNECTING = "connecting"
OUTBOUND_DISCONNECTED = "disconnected"

_HANDSHAKE = "handshake"
_OPEN = "open"
_CLOSED = "closed"


class HostAndPort(Protocol):
    host: str
    port: int


class _Link:
    """What this node knows about one peer, across connections."""

    __slots__ = ("peer_id", "address", "outbound", "outbound_state", "inbound", "last_error",
                 "last_errors", "sent_frames", "received_frames", "dropped_frames",
                 "handshake_failures", "dial_task")

    def __init__(self, peer_id: str, address: HostAndPort) -> None:
        self.peer_id = peer_id
        self.address = address
        self.outbound: _Connection | None = None
        self.outbound_state = OUTBOUND_DISCONNECTED
        self.inbound: _Connection | None = None
        self.last_error: str | None = None
        # The last failure of each direction (index: dialling), to log a repeat only once.
        self.last_errors: list[str | None] = [None, None]
        self.sent_frames = 0
        self.received_frames = 0
        self.dropped_frames = 0
        self.handshake_failures = 0
        self.dial_task: asyncio.Task | None = None

    def describe(self) -> str:
        return f"peer {self.peer_id} at {self.address.host}:{self.address.port}"


class _Connection(asyncio.Protocol):
    """One TCP connection, dialled (``dialled_link`` given) or accepted; see the module
    docstring. ``handshake_done`` resolves to whether the handshake succeeded, ``closed`` once
    the connection is gone; neither ever holds an exception."""

    def __init__(self, network: PeerNetwork, dialled_link: _Link | None) -> None:
        self.network = network
        self.dialling = dialled_link is not None
        self.link = dialled_link  # the dialled peer, or the authenticated (or claimed) one
        self.claimed_id: str | None = None
        self.hello_sent = False
        self.state = _HANDSHAKE
        self.transport: asyncio.Transport | None = None
        self.remote_host = "?"
        self.nonce = secrets.token_bytes(nonce_bytes)
        self.decoder = FrameDecoder(PEER_CODEC, handshake_frame_bytes_max)
        self.handshake_done: asyncio.Future[bool] = network.loop.create_future()
        self.closed: asyncio.Future[None] = network.loop.create_future()
        self.timeout_handle: asyncio.TimerHandle | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.flush_scheduled = False
        self.writing_paused = False

    # --- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        network = self.network
        network.connections.add(self)
        remote = transport.get_extra_info("peername")
        self.remote_host = remote[0] if remote else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if network.stopping:
            self.close(None)
            return
        self.timeout_handle = network.loop.call_later(handshake_timeout_s, self._handshake_expired)
        if not self.dialling:
            if len(network.handshaking) >= handshakes_pending_max:
                self.close(f"was closed: {handshakes_pending_max} handshakes already pending")
                return
            network.handshaking.add(self)
            self._write_now(Challenge(self.nonce))

    def data_received(self, data: bytes) -> None:
        if self.state is _CLOSED:
            return
        try:
            self.decoder.receive_data(data)
            while self.state is not _CLOSED:
                message = self.decoder.next_frame()
                if message is NEED_DATA:
                    return
                if self.state is _OPEN:
                    self._on_message(message)
                elif self.dialling:
                    self._on_dialer_handshake(message)
                else:
                    self._on_acceptor_handshake(message)
        except FrameError as error:
            self.close(f"sent a frame this node cannot accept ({error})")

    def eof_received(self) -> None:
        self.close("closed the connection", logging.INFO)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close("disconnected" + (f" ({exc})" if exc is not None else ""), logging.INFO)
        self.network.connection_closed(self)
        self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.flush()

    # --- the handshake ----------------------------------------------------------------------

    def _on_dialer_handshake(self, message: object) -> None:
        network = self.network
        link = self.link
        assert link is not None
        if type(message) is Challenge and not self.hello_sent:
            if len(message.nonce) != nonce_bytes:
                self.close(f"sent a challenge of {len(message.nonce)} bytes, not {nonce_bytes}")
                return
            self.hello_sent = True
            proof = dialer_proof(network.secret, message.nonce, network.cluster_id,
                                 network.node_id)
            self._write_now(Hello(network.cluster_id, network.node_id,
                                  limits.peer_protocol_version, self.nonce, proof))
        elif type(message) is Welcome and self.hello_sent:
            if message.node_id != link.peer_id:
                self.close(f"is node {message.node_id!r}, not {link.peer_id!r}: check the peer "
                            f"address of {link.peer_id} in cluster.members")
                return
            expected = acceptor_proof(network.secret, self.nonce, network.cluster_id,
                                      link.peer_id)
            if not hmac.compare_digest(message.proof, expected):
                self.close("could not prove that it knows the cluster secret: check "
                            "cluster.secret_file on both nodes")
                return
            self._open()
            link.outbound = self
            link.outbound_state = OUTBOUND_CONNECTED
            log.info("%s: connected", link.describe())
        elif type(message) is Refused:
            self.close(f"refused this node: {message.reason}")
        else:
            self.close(f"sent a {type(message).__name__} during the handshake")

    def _on_acceptor_handshake(self, message: object) -> None:
        network = self.network
        if type(message) is not Hello:
            self._refuse(f"sent a {type(message).__name__} instead of Hello")
            return
        self.claimed_id = message.node_id
        self.link = network.links.get(message.node_id)
        if message.cluster_id != network.cluster_id:
            self._refuse(f"it belongs to cluster {message.cluster_id!r}, this node to "
                         f"{network.cluster_id!r}: check cluster.id on both nodes")
        elif message.node_id == network.node_id:
            self._refuse(f"{message.node_id!r} is this node's own id: give every node its own "
                         "node.id")
        elif self.link is None:
            self._refuse(f"{message.node_id!r} is not in this node's cluster.members: check "
                         "cluster.members on both nodes")
        elif message.version != limits.peer_protocol_version:
            self._refuse(f"it speaks peer protocol version {message.version}, this node "
                         f"{limits.peer_protocol_version}: run one ChorusDB version on every node")
        elif len(message.nonce) != nonce_bytes:
            self._refuse(f"its challenge is {len(message.nonce)} bytes, not {nonce_bytes}")
        elif not hmac.compare_digest(
                message.proof,
                dialer_proof(network.secret, self.nonce, network.cluster_id, message.node_id)):
            self._refuse("wrong cluster secret: check cluster.secret_file on both nodes")
        else:
            self._write_now(Welcome(network.node_id, acceptor_proof(
                network.secret, message.nonce, network.cluster_id, network.node_id)))
            early = self.decoder.buffered_bytes
            self._open()
            self.decoder = FrameDecoder(PEER_CODEC, limits.frame_bytes_max)
            if early:
                self.close("sent data before the handshake completed")
                return
            network.inbound_opened(self.link, self)

    def _refuse(self, reason: str) -> None:
        self._write_now(Refused(reason))
        self.close(f"was refused: {reason}")

    def _handshake_expired(self) -> None:
        self.timeout_handle = None
        if self.dialling:
            self.close(f"did not complete the handshake within {handshake_timeout_s} s: is this "
                        "the peer address of a ChorusDB node?")
        else:
            self.close(f"did not complete the handshake within {handshake_timeout_s} s")

    def _open(self) -> None:
        self.state = _OPEN
        self.network.handshaking.discard(self)
        if self.timeout_handle is not None:
            self.timeout_handle.cancel()
            self.timeout_handle = None
        self.handshake_done.set_result(True)

    # --- after the handshake ----------------------------------------------------------------

    def _on_message(self, message: object) -> None:
        link = self.link
        assert link is not None
        if self.dialling:
            self.close(f"sent a {type(message).__name__} on this node's outbound connection, "
                        "which carries messages the other way only")
        elif getattr(message, "source", None) != link.peer_id:
            self.close(f"sent a {type(message).__name__} from "
                        f"{getattr(message, 'source', None)!r}, not from itself")
        elif getattr(message, "target", None) != self.network.node_id:
            self.close(f"sent a {type(message).__name__} for "
                        f"{getattr(message, 'target', None)!r}, not for this node")
        else:
            link.received_frames += 1
            self.network.on_message(message)

    def enqueue(self, frame: bytes) -> bool:
        """Queue ``frame`` for the next flush; False (not queued) when the queue is full."""
        size = len(frame)
        if self.pending_bytes + size > self.network.queue_bytes_max:
            return False
        self.pending.append(frame)
        self.pending_bytes += size
        if not self.flush_scheduled and not self.writing_paused:
            self.flush_scheduled = True
            self.network.loop.call_soon(self.flush)
        return True

    def flush(self) -> None:
        """Hand every queued frame to the transport in one call, unless it is paused."""
        self.flush_scheduled = False
        if self.writing_paused or self.state is not _OPEN or not self.pending:
            return
        assert self.link is not None and self.transport is not None
        self.transport.writelines(self.pending)
        self.link.sent_frames += len(self.pending)
        self.pending = []
        self.pending_bytes = 0

    # --- closing ----------------------------------------------------------------------------

    def describe(self) -> str:
        if self.dialling:
            assert self.link is not None
            return self.link.describe()
        if self.handshake_done.done() and self.handshake_done.result():
            return f"peer {self.claimed_id} (connected from {self.remote_host})"
        if self.claimed_id is not None:
            return f"node {self.claimed_id!r} connecting from {self.remote_host}"
        return f"a connection from {self.remote_host}"

    def _write_now(self, message: object) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(PEER_CODEC, message))

    def close(self, reason: str | None, level: int = logging.WARNING, *,
               abort: bool = False) -> None:
        """Close the connection (once); ``reason`` (None: no report) is logged and recorded.
        Frames the transport still holds are discarded (``abort``) rather than waited for."""
        if self.state is _CLOSED:
            return
        in_handshake = self.state is _HANDSHAKE
        self.state = _CLOSED
        if self.timeout_handle is not None:
            self.timeout_handle.cancel()
            self.timeout_handle = None
        if reason is not None and not self.network.stopping:
            self.network.record(self.link, f"{self.describe()} {reason}", level,
                                dialling=self.dialling, handshake_failure=in_handshake)
        if not self.handshake_done.done():
            self.handshake_done.set_result(False)
        transport = self.transport
        if transport is not None:
            if abort or transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()


class PeerNetwork:
    """The peer links of one node; see the module docstring."""

    def __init__(self, *, node_id: str, cluster_id: str, secret: bytes, listen: HostAndPort,
                 peers: Mapping[str, HostAndPort], on_message: Callable[[object], None],
                 rng: random.Random | None = None,
                 queue_bytes_max: int = peer_queue_bytes_max) -> None:
        assert node_id not in peers, f"{node_id} lists itself among its peers"
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.secret = secret
        self.on_message = on_message
        self.queue_bytes_max = queue_bytes_max
        self.links = {peer_id: _Link(peer_id, peers[peer_id]) for peer_id in sorted(peers)}
        self.connections: set[_Connection] = set()
        self.handshaking: set[_Connection] = set()
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop
        self._listen = listen
        self._rng = rng if rng is not None else random.Random()
        self._server: asyncio.base_events.Server | None = None
        self._stranger_handshake_failures = 0
        self._last_stranger_error: str | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listener (port 0 picks a free port) and start dialling every peer."""
        assert self._server is None and not self.stopping, "start a PeerNetwork once"
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            partial(_Connection, self, None), self._listen.host, self._listen.port,
            reuse_address=True)
        for link in self.links.values():
            link.dial_task = self.loop.create_task(self._dial_forever(link),
                                                   name=f"dial {link.peer_id}")

    def bound_address(self) -> HostAndPort:
        """The listener's actual address, of the same type as ``listen``."""
        assert self._server is not None, "bound_address() before start()"
        host, port = self._server.sockets[0].getsockname()[:2]
        return type(self._listen)(host, port)  # type: ignore[call-arg]

    async def stop(self) -> None:
        """Stop listening and dialling and close every connection; calling it again is a no-op."""
        if self.stopping:
            return
        self.stopping = True
        if self._server is None:
            return
        self._server.close()
        tasks = [link.dial_task for link in self.links.values() if link.dial_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closing = [connection.closed for connection in self.connections]
        for connection in list(self.connections):
            connection.close(None, abort=True)
        if closing:
            await asyncio.wait(closing, timeout=stop_timeout_s)
        await self._server.wait_closed()

    # --- sending ----------------------------------------------------------------------------

    def send(self, message: object) -> None:
        """Queue ``message`` for ``message.target``; drop and count it when that peer is not
        connected or its queue is full. Never blocks; raises only for a programming error
        (an unknown target, another node's ``source``, an unencodable or oversized message)."""
        assert getattr(message, "source", None) == self.node_id, message
        link = self.links.get(message.target)  # type: ignore[attr-defined]
        assert link is not None, f"{message!r:.200} is for no peer of {self.node_id}"
        connection = link.outbound
        if connection is None or not connection.enqueue(encode_frame(PEER_CODEC, message)):
            link.dropped_frames += 1

    # --- status -----------------------------------------------------------------------------

    def peer_status(self) -> dict[str, dict]:
        """Per peer, in id order: the outbound link's state, whether the peer is connected in,
        the last failure seen on either, frames sent (handed to the socket), received and
        dropped, the bytes queued for the socket (not yet handed to it), and failed handshakes
        of either direction (inbound ones count under the node id the dialer claimed)."""
        return {
            peer_id: {
                "outbound": link.outbound_state,
                "inbound": link.inbound is not None,
                "last_error": link.last_error,
                "sent_frames": link.sent_frames,
                "received_frames": link.received_frames,
                "dropped_frames": link.dropped_frames,
                "queued_bytes": link.outbound.pending_bytes if link.outbound is not None else 0,
                "handshake_failures": link.handshake_failures,
            }
            for peer_id, link in self.links.items()
        }

    @property
    def stranger_handshake_failures(self) -> int:
        """Inbound handshakes that failed before naming a configured peer (unknown node ids,
        garbage, timeouts before ``Hello``); the rest count in ``peer_status``."""
        return self._stranger_handshake_failures

    # --- called by connections --------------------------------------------------------------

    def record(self, link: _Link | None, text: str, level: int, *, dialling: bool,
               handshake_failure: bool) -> None:
        """Log a connection's failure or ending and keep it as the peer's ``last_error``. Text
        that repeats the last one of the same direction is logged at debug level only."""
        if link is None:
            repeated = text == self._last_stranger_error
            self._last_stranger_error = text
            self._stranger_handshake_failures += handshake_failure
        else:
            repeated = text == link.last_errors[dialling]
            link.last_errors[dialling] = text
            link.last_error = text
            link.handshake_failures += handshake_failure
        log.log(logging.DEBUG if repeated else level, "%s", text)

    def inbound_opened(self, link: _Link, connection: _Connection) -> None:
        replaced = link.inbound
        link.inbound = connection
        if replaced is not None:
            replaced.close(None, abort=True)
            log.info("peer %s connected again from %s; its previous connection is closed",
                     link.peer_id, connection.remote_host)

    def connection_closed(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        self.handshaking.discard(connection)
        link = connection.link
        if link is None:
            return
        if link.inbound is connection:
            link.inbound = None
        if link.outbound is connection:
            link.outbound = None
            link.outbound_state = OUTBOUND_DISCONNECTED
            link.dropped_frames += len(connection.pending)

    # --- dialling ---------------------------------------------------------------------------

    async def _dial_forever(self, link: _Link) -> None:
        delay_s = reconnect_delay_initial_s
        while True:
            link.outbound_state = OUTBOUND_CONNECTING
            connection = await self._dial(link)
            if connection is not None:
                # shielded: cancelling this task must not cancel the connection's own futures
                if await asyncio.shield(connection.handshake_done):
                    delay_s = reconnect_delay_initial_s
                await asyncio.shield(connection.closed)
            link.outbound_state = OUTBOUND_DISCONNECTED
            await asyncio.sleep(delay_s * (1 - reconnect_jitter_fraction * self._rng.random()))
            delay_s = min(delay_s * 2, reconnect_delay_max_s)

    async def _dial(self, link: _Link) -> _Connection | None:
        try:
            async with asyncio.timeout(connect_timeout_s):
                _, connection = await self.loop.create_connection(
                    partial(_Connection, self, link), link.address.host, link.address.port)
        except (OSError, TimeoutError) as error:
            shown = str(error) or f"no answer within {connect_timeout_s} s"
            self.record(link, f"{link.describe()} is unreachable ({shown}): is it running, and is "
                        "that its peer address?", logging.INFO, dialling=True,
                        handshake_failure=False)
            return None
        return connection
