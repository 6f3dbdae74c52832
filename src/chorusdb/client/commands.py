"""Which commands are reads, which are writes, and which writes carry a request id.

The kind of a command comes from the server's own command table (``chorusdb.core.commands``):
``data-read`` commands are reads (routed per the read policy, behind ``CHORUS.WAITPOS``),
``data-write`` commands are writes (sent to the leader), and everything else — connection and
introspection commands, ``WAIT``, ``CHORUS.*``, commands the table does not know — is ``OTHER``:
sent once to the leader when one is known (any member otherwise), with no session wrapping.

A write that is retried after an unknown outcome (``-INDOUBT``, a timeout, a dropped connection)
may be applied twice. For most writes that is harmless: ``SET k v`` twice leaves ``k`` = ``v``
and answers ``OK`` both times. For the ones in ``NON_IDEMPOTENT_COMMANDS`` a second application
changes the data (``INCR``, ``RPUSH``, ...) or the reply (``SETNX`` answers 0 the second time,
``GETSET`` returns the value the first attempt wrote). Those always go as
``CHORUS.ONCE <request-id> <command> ...``: the leader records the id with the reply in the same
log entry as the write, and a retry with the same id, on any member and after a failover, gets
the remembered reply and applies nothing. ``SET`` joins them when it carries ``GET`` (it returns
the old value, like ``GETSET``) or ``NX`` (it answers nil the second time, like ``SETNX``).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence

from chorusdb.core.commands import COMMANDS


class Kind(enum.Enum):
    READ = "read"
    WRITE = "write"
    OTHER = "other"


class RequestIds(enum.Enum):
    """Which writes are wrapped in ``CHORUS.ONCE``."""

    NON_IDEMPOTENT = "non_idempotent"
    ALL = "all"


NON_IDEMPOTENT_COMMANDS = frozenset({
    b"INCR", b"INCRBY", b"DECR", b"DECRBY",     # a second application adds again
    b"APPEND", b"RPUSH", b"LPUSH",              # ... appends again
    b"LPOP", b"RPOP", b"GETDEL",                # ... removes another item / answers nil
    b"GETSET", b"SETNX",                        # ... answers what the first attempt did
})
SET_OPTIONS_NON_IDEMPOTENT = frozenset({b"GET", b"NX"})
ONCE_COMMAND = b"CHORUS.ONCE"
request_id_bytes = 16


def new_request_id() -> str:
    """A fresh request id: ``request_id_bytes`` random bytes from the OS, in hex. Never the
    ``random`` module: ids of different processes must not repeat."""
    return secrets.token_hex(request_id_bytes)


def _word(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def command_name(args: Sequence[object]) -> bytes:
    """The upper-case command name; redis-py may pass ``"CLIENT SETNAME"`` as one word."""
    return _word(args[0]).split(b" ", 1)[0].upper()


def kind_of(args: Sequence[object]) -> Kind:
    spec = COMMANDS.get(command_name(args))
    if spec is None:
        return Kind.OTHER
    return {"data-read": Kind.READ, "data-write": Kind.WRITE}.get(spec.category, Kind.OTHER)


def is_non_idempotent(args: Sequence[object]) -> bool:
    """Whether applying this write twice differs from applying it once (module docstring)."""
    name = command_name(args)
    if name == b"SET":
        # SET key value [options]: the options come after the value, and none of them takes
        # an argument that could be read as GET or NX (EX/PX/EXAT/PXAT take numbers).
        return any(_word(option).upper() in SET_OPTIONS_NON_IDEMPOTENT for option in args[3:])
    return name in NON_IDEMPOTENT_COMMANDS


def needs_request_id(args: Sequence[object], request_ids: RequestIds) -> bool:
    """Whether a write goes as ``CHORUS.ONCE <id> ...``."""
    assert kind_of(args) is Kind.WRITE, args
    return request_ids is RequestIds.ALL or is_non_idempotent(args)
