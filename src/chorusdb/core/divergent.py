"""Divergent entries: what an operator sees of them and how one is written again.

When a node's log disagrees with a new leader's, the leader core removes the disagreeing suffix
and keeps each removed entry as a ``DivergentEntry`` in the node's ``divergent`` table (see
``core.leader``). This module turns such an entry into what ``CHORUS.DIVERGENT`` shows (a flat
array of field names and values, the way ``XINFO`` answers) and into the client command that
writes it again through the current leader (``CHORUS.DIVERGENT REAPPLY``).

An entry is reapplied as the log recorded it, not as the client sent it: an INCR comes back as
a SET of the value it produced, a relative expiry as the absolute time it pointed at. That is
the write as it was acknowledged (if it was), so reapplying it restores that state; an operator
who wants the original intent instead reads the entry with ``SHOW`` and writes by hand.
"""

from __future__ import annotations

from chorusdb.core.api import ClientCommand
from chorusdb.core.model import (
    NO_EXPIRY,
    DeleteKeys,
    DivergentEntry,
    Effect,
    EpochStart,
    FlushAll,
    PopItems,
    PushItems,
    Request,
    SetExpiry,
    SetValue,
)

RESOLUTIONS = ("", "reapplied", "discarded")


def carries_a_write(effect: Effect) -> bool:
    """An ``EpochStart`` changes no data: nothing to quarantine or reapply."""
    return type(effect) is not EpochStart


def entry_command(effect: Effect) -> ClientCommand:
    """The client command that makes ``effect`` happen again on the leader."""
    kind = type(effect)
    if kind is SetValue:
        args = (effect.key, effect.value)
        if effect.expire_at_ms != NO_EXPIRY:
            args += (b"PXAT", str(effect.expire_at_ms).encode())
        return ClientCommand(b"SET", args)
    if kind is PushItems:
        # PushItems lists the items in the order they were pushed, as LPUSH/RPUSH take them.
        return ClientCommand(b"LPUSH" if effect.left else b"RPUSH", (effect.key, *effect.items))
    if kind is PopItems:
        return ClientCommand(b"LPOP" if effect.left else b"RPOP",
                             (effect.key, str(effect.count).encode()))
    if kind is DeleteKeys:
        return ClientCommand(b"DEL", effect.keys)
    if kind is SetExpiry:
        if effect.expire_at_ms == NO_EXPIRY:
            return ClientCommand(b"PERSIST", (effect.key,))
        return ClientCommand(b"PEXPIREAT", (effect.key, str(effect.expire_at_ms).encode()))
    if kind is Request:
        return _request_command(effect)
    assert kind is FlushAll, effect
    return ClientCommand(b"FLUSHDB", ())


def _request_command(request: Request) -> ClientCommand:
    """``CHORUS.ONCE`` with the request's id around a command that makes its effects happen
    again: if the client already retried the request where it is reapplied, the retry is
    remembered there and the reapply answers its reply and applies nothing. One command's
    effects are one effect, an MSET's values, or a push that reclaimed an expired key first."""
    effects = request.effects
    last = effects[-1]
    if len(effects) == 1 or (type(last) is PushItems
                             and effects[:-1] == (DeleteKeys((last.key,)),)):
        wrapped = entry_command(last)
    else:
        assert all(type(e) is SetValue and e.expire_at_ms == NO_EXPIRY for e in effects), request
        wrapped = ClientCommand(b"MSET", tuple(word for e in effects for word in (e.key, e.value)))
    return ClientCommand(b"CHORUS.ONCE", (request.request_id, wrapped.name, *wrapped.args))


def command_text(command: ClientCommand) -> bytes:
    """``SET k v PXAT 123``: the words joined by spaces (binary-safe bytes, for display)."""
    return b" ".join((command.name, *command.args))


def item_reply(item: DivergentEntry) -> list:
    """One entry as ``CHORUS.DIVERGENT`` shows it: alternating field names and values."""
    position = item.entry.position
    return [b"id", item.entry_id, b"epoch", position.epoch, b"index", position.index,
            b"leader", item.leader.encode(), b"removed_at_ms", item.removed_at_ms,
            b"removed_by", item.removed_by.encode(), b"verified", int(item.verified),
            b"resolution", item.resolution.encode(), b"resolved_by", item.resolved_by.encode(),
            b"resolved_at_ms", item.resolved_at_ms,
            b"command", command_text(entry_command(item.entry.effect))]
