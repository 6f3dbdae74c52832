"""``LinkProxies``: one TCP proxy per directed peer link, whose behaviour flips at run time.

A node dials each peer at the address its own configuration lists for that peer and sends its
messages over that one connection (``net.peers``). The chaos cluster lists, in node ``a``'s
configuration, the proxy of link ``(a, b)`` as ``b``'s peer address, so every byte ``a``
sends ``b`` — and every byte of the handshake ``b`` answers with — crosses that proxy and
nothing else.
Cutting ``(a, b)`` silences ``a -> b`` without touching ``b -> a``, which is the asymmetric
partition a single shared connection could not express.

Every proxy listens on 127.0.0.1 on a port the kernel chooses, and all of them are served by
one asyncio loop in one background thread; the public methods are synchronous, safe to call
from any other thread, and return once the change is in force. Each accepted connection gets
its own connection to the link's target; if the target refuses (its node is down), the accepted
connection is reset, as a connect to a dead node would be.

Directions: ``forward`` is dialer -> acceptor (``src -> dst``, the link's messages), ``backward``
is acceptor -> dialer (``dst -> src``: only the handshake's answers in ChorusDB). Each
direction of each connection is a reader and a writer joined by a queue of at most
``in_flight_chunks_max`` chunks of at most ``chunk_bytes_max`` bytes; when the queue is full the
reader stops reading, the kernel buffers fill and the sender's own flow control holds it, as a
slow network would.

Modes (frozen values, one per link, ``Pass()`` at start):

- ``Pass()``: bytes flow as they come.
- ``Blackhole(direction)``: in ``forward``, ``backward`` or ``both`` directions nothing is
  delivered. Connections stay open and new ones are still accepted, as in a real partition:
  neither end learns anything, they only stop hearing. The bytes are **held, not dropped**: the
  proxy stops reading the held direction (a chunk it had already read waits in its queue) and
  delivers everything, in order, when the direction passes again — what TCP's retransmissions
  do when a partition heals before the connection times out. A node that gives up on a silent
  connection closes it itself, and its peer sees that close only once the direction passes.
- ``Delay(ms, jitter_ms)``: each chunk, in both directions, is delivered ``ms`` plus a uniform
  ``[-jitter_ms, +jitter_ms]`` (never below 0) after the proxy read it, never before a chunk
  read earlier (a TCP stream is not reordered). It is latency, not a bandwidth limit: chunks
  in flight overlap.
- ``Reset()``: an action, not a state. The link's current connections are aborted with
  ``SO_LINGER`` 0, so both ends get a TCP RST, and the link then passes (its mode becomes
  ``Pass()``); new connections are accepted at once.

Jitter is drawn from a ``random.Random`` seeded by the ``seed`` argument, used only on the
loop's thread.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass

FORWARD = "forward"
BACKWARD = "backward"
BOTH = "both"
DIRECTIONS = (FORWARD, BACKWARD, BOTH)
PROXY_HOST = "127.0.0.1"

chunk_bytes_max = 64 * 1024       # one read from a socket
in_flight_chunks_max = 64         # read but not yet delivered, per direction of a connection
target_connect_timeout_s = 2.0    # the proxy's own connect to the link's target
loop_call_timeout_s = 10.0        # a public method waiting for the proxies' thread to act
thread_join_timeout_s = 10.0      # stop(): the proxies' thread ending

Link = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Pass:
    """Bytes flow both ways."""


@dataclass(frozen=True, slots=True)
class Blackhole:
    """Nothing is delivered in ``direction`` (``forward``, ``backward`` or ``both``); the bytes
    are held and delivered when the link passes again."""

    direction: str = BOTH

    def __post_init__(self) -> None:
        assert self.direction in DIRECTIONS, self.direction

    def holds(self, direction: str) -> bool:
        return self.direction in (direction, BOTH)


@dataclass(frozen=True, slots=True)
class Delay:
    """Every chunk is delivered ``ms`` +- up to ``jitter_ms`` after it was read."""

    ms: int
    jitter_ms: int = 0

    def __post_init__(self) -> None:
        assert self.ms >= 0 and self.jitter_ms >= 0, (self.ms, self.jitter_ms)


@dataclass(frozen=True, slots=True)
class Reset:
    """Abort the link's current connections (TCP RST to both ends); the link then passes."""


LinkMode = Pass | Blackhole | Delay | Reset


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with ``SO_LINGER`` 0, so the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass                    # already closed by the kernel: nothing left to reset
    writer.transport.abort()


class _Connection:
    """One accepted connection and its connection to the target (loop thread only)."""

    def __init__(self, link: _LinkState, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.link = link
        self.downstream = (reader, writer)
        self.writers = [writer]
        self.pipes: set[asyncio.Task] = set()
        self.closed = False

    async def run(self) -> None:
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(*self.link.target),
                                              target_connect_timeout_s)
        except (OSError, TimeoutError):
            self.close(abortive=True)
            return
        self.writers.append(upstream[1])
        if self.closed:                          # reset while it connected
            _abort(upstream[1])
            return
        down_reader, down_writer = self.downstream
        up_reader, up_writer = upstream
        queues = {FORWARD: asyncio.Queue(in_flight_chunks_max),
                  BACKWARD: asyncio.Queue(in_flight_chunks_max)}
        readers = {asyncio.create_task(self._read(FORWARD, down_reader, queues[FORWARD])),
                   asyncio.create_task(self._read(BACKWARD, up_reader, queues[BACKWARD]))}
        writers = {asyncio.create_task(self._write(FORWARD, up_writer, queues[FORWARD])),
                   asyncio.create_task(self._write(BACKWARD, down_writer, queues[BACKWARD]))}
        self.pipes = pending = readers | writers
        try:
            while pending and not self.closed:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = any(task.cancelled() or task.exception() is not None for task in done)
                if failed or done & writers:     # an error, or one side's end delivered
                    self.close(abortive=failed)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _read(self, direction: str, reader: asyncio.StreamReader,
                    queue: asyncio.Queue) -> None:
        """Read while ``direction`` passes; stamp each chunk with the time it is due."""
        loop = asyncio.get_running_loop()
        due_s = 0.0
        while True:
            await self.link.passing[direction].wait()
            data = await reader.read(chunk_bytes_max)
            if not data:
                await queue.put(None)
                return
            due_s = max(due_s, loop.time() + self.link.delay_s())
            await queue.put((due_s, data))

    async def _write(self, direction: str, writer: asyncio.StreamWriter,
                     queue: asyncio.Queue) -> None:
        """Deliver each chunk when it is due and ``direction`` passes; return at the end."""
        loop = asyncio.get_running_loop()
        while True:
            item = await queue.get()
            if item is None:
                return
            due_s, data = item
            if due_s > loop.time():
                await asyncio.sleep(due_s - loop.time())
            await self.link.passing[direction].wait()
            writer.write(data)
            await writer.drain()

    def close(self, abortive: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.link.connections.discard(self)
        for task in self.pipes:
            task.cancel()
        for writer in self.writers:
            if abortive:
                _abort(writer)
            else:
                writer.close()


class _LinkState:
    """One link's target, mode and connections (loop thread only)."""

    def __init__(self, target: tuple[str, int], rng: random.Random) -> None:
        self.target = target
        self.rng = rng
        self.mode: LinkMode = Pass()
        self.passing = {FORWARD: asyncio.Event(), BACKWARD: asyncio.Event()}
        for event in self.passing.values():
            event.set()
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.server: asyncio.Server | None = None

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        self.connections.add(connection)
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await connection.run()
        finally:
            self.tasks.discard(task)
            connection.close(abortive=True)

    def apply(self, mode: LinkMode) -> None:
        if isinstance(mode, Reset):
            for connection in list(self.connections):
                connection.close(abortive=True)
            mode = Pass()
        self.mode = mode
        for direction, event in self.passing.items():
            if isinstance(mode, Blackhole) and mode.holds(direction):
                event.clear()
            else:
                event.set()

    def delay_s(self) -> float:
        mode = self.mode
        if not isinstance(mode, Delay):
            return 0.0
        jitter_ms = self.rng.uniform(-mode.jitter_ms, mode.jitter_ms) if mode.jitter_ms else 0
        return max(0.0, mode.ms + jitter_ms) / 1000


class LinkProxies:
    """A proxy per directed link ``(src, dst)``, forwarding to ``links[(src, dst)]`` (``dst``'s
    real peer address); see the module docstring. ``start`` before anything else, ``stop``
    once (also a context manager)."""

    def __init__(self, links: Mapping[Link, tuple[str, int]], seed: int = 0) -> None:
        self._targets = dict(links)
        self._rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._links: dict[Link, _LinkState] = {}
        self._addresses: dict[Link, tuple[str, int]] = {}

    def __enter__(self) -> LinkProxies:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def links(self) -> tuple[Link, ...]:
        return tuple(self._targets)

    def start(self) -> None:
        """Listen on every link's proxy port (bound before this returns)."""
        assert self._thread is None, "already started"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-link-proxies",
                                        daemon=True)
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self.stop()
            raise

    def address(self, src: str, dst: str) -> tuple[str, int]:
        """Where ``src`` dials ``dst``: the proxy of link ``(src, dst)``."""
        return self._addresses[(src, dst)]

    def mode(self, src: str, dst: str) -> LinkMode:
        return self._links[(src, dst)].mode

    def set_mode(self, src: str, dst: str, mode: LinkMode) -> None:
        self.set_modes({(src, dst): mode})

    def set_modes(self, modes: Mapping[Link, LinkMode]) -> None:
        """Switch several links at once (one step of the proxies' loop, so a partition starts
        on all its links together)."""
        unknown = modes.keys() - self._links.keys()
        assert not unknown, f"no such links: {sorted(unknown)}"
        self._call(self._apply(dict(modes)))

    def heal(self) -> None:
        """Every link passes."""
        self.set_modes({link: Pass() for link in self._links})

    def stop(self) -> None:
        """Abort every connection, close every port, end the thread. Safe to call again."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        try:
            if thread.is_alive():
                asyncio.run_coroutine_threadsafe(self._close_all(), loop).result(
                    loop_call_timeout_s)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(thread_join_timeout_s)
            if not thread.is_alive():
                loop.close()

    # --- on the proxies' thread -----------------------------------------------------------

    def _call(self, coroutine) -> object:
        assert self._loop is not None, "not started"
        assert threading.current_thread() is not self._thread, "called from the proxies' loop"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(loop_call_timeout_s)

    async def _listen(self) -> None:
        for link, target in self._targets.items():
            state = _LinkState(target, self._rng)
            state.server = await asyncio.start_server(state.accept, PROXY_HOST, 0)
            self._links[link] = state
            self._addresses[link] = state.server.sockets[0].getsockname()[:2]

    async def _apply(self, modes: dict[Link, LinkMode]) -> None:
        for link, mode in modes.items():
            self._links[link].apply(mode)

    async def _close_all(self) -> None:
        tasks = []
        for state in self._links.values():
            if state.server is not None:
                state.server.close()
            for connection in list(state.connections):
                connection.close(abortive=True)
            tasks.extend(state.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
