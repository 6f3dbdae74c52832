"""``CHORUS.WAITPOS epoch index timeout_ms [MAXLAG entries] [MAXSTALENESS ms]``: what a session
read asks of the node that serves it, parsed once for every mode.

A client that keeps a session token (the highest position it wrote or read) sends this before
each read, pipelined with the read: the server runs nothing after it on that connection until
it answers, so the read sees at least the token's position (read-your-writes, monotonic reads;
the single log gives consistent prefix). ``MAXLAG`` bounds how many committed entries the node
may still lack (the leader's commit index as this node last heard it, minus its applied index);
``MAXSTALENESS`` bounds how long ago the node last held everything the leader had committed
(measured on this node's clock from when the leader's message arrived, so a message's own
delay is not counted). The leader, and a standalone node, meet both bounds by definition.

``LINEARIZABLE`` asks for a linearizable read: only the leader serves it (it confirms that it
still leads before answering), any other member refuses at once (``-NOTLEADER``). The server
keeps that choice for the connection's following commands, as ``CHORUS.CONSISTENCY`` does, and
marks them ``ClientCommand.linearizable``, so a node that stops leading between the wait and the
read refuses the read too.
"""

from __future__ import annotations

from dataclasses import dataclass

from chorusdb.core.model import Position
from chorusdb.replies import Error

NOT_AN_INTEGER = Error("ERR value is not an integer or out of range")
SYNTAX_ERROR = Error("ERR syntax error")
BOUND_OPTIONS = (b"MAXLAG", b"MAXSTALENESS")
LINEARIZABLE_FLAG = b"LINEARIZABLE"


@dataclass(frozen=True, slots=True)
class PositionWaitRequest:
    """A parsed ``CHORUS.WAITPOS``; ``None`` bounds are not asked for."""

    position: Position
    timeout_ms: int
    max_lag_entries: int | None = None
    max_staleness_ms: int | None = None

    def bounds_met(self, lag_entries: int, staleness_ms: int | None) -> bool:
        """Whether a node ``lag_entries`` behind the commit it knows, and last caught up with it
        ``staleness_ms`` ago (None: never), may serve the read."""
        if self.max_lag_entries is not None and lag_entries > self.max_lag_entries:
            return False
        if self.max_staleness_ms is not None and (staleness_ms is None
                                                  or staleness_ms > self.max_staleness_ms):
            return False
        return True


def parse_position_wait(args: tuple[bytes, ...]) -> PositionWaitRequest | Error:
    """The request ``args`` (everything after the command name) make, or the error to answer."""
    numbers: list[int] = []
    for text in args[:3]:
        try:
            numbers.append(int(text))
        except ValueError:
            return NOT_AN_INTEGER
    epoch, index, timeout_ms = numbers
    if timeout_ms < 0:
        return Error("ERR timeout is negative")
    if epoch < 0 or index < 0:
        return Error("ERR a negative position or count")
    bounds: dict[bytes, int] = {}
    options = args[3:]
    if options and options[-1].upper() == LINEARIZABLE_FLAG:
        options = options[:-1]              # for the server and the node's role, not a bound
    if len(options) % 2:
        return SYNTAX_ERROR
    for name, value in zip(options[::2], options[1::2]):
        option = name.upper()
        if option not in BOUND_OPTIONS or option in bounds:
            return SYNTAX_ERROR
        try:
            bounds[option] = int(value)
        except ValueError:
            return NOT_AN_INTEGER
        if bounds[option] < 0:
            return Error(f"ERR {option.decode()} is negative")
    return PositionWaitRequest(Position(epoch, index), timeout_ms, bounds.get(b"MAXLAG"),
                               bounds.get(b"MAXSTALENESS"))
