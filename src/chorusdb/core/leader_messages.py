"""The peer messages of leader mode: who sends each, when, and what must be on disk first.

Every message names its ``source`` and ``target`` member and the sender's ``epoch`` (the leader
term; 1 until elections exist). A receiver that sees a higher epoch than its own adopts it; a
message from a lower epoch is ignored (once elections exist, it will be answered with the
receiver's epoch, so a deposed leader learns at once that it was deposed). Positions are ``(epoch, index)`` throughout.

Messages may be lost, duplicated, delayed and reordered; every handler is idempotent and the
leader resends entries and chunks on its own timers, so the protocol needs nothing from the
transport but integrity (the frame layer) and authentication (the handshake). A ``Forward`` is
not resent: if it or its reply is lost, the follower answers its client ``-INDOUBT``.

=================  ===================  ==========================================================
message            sender -> receiver   sent when, and what is durable before it leaves
=================  ===================  ==========================================================
``Append``         leader -> follower   new entries exist and the in-flight window allows, or a
                                        heartbeat is due. Entries are sent in the ``Ready`` that
                                        persists them: the driver persists before it sends, so
                                        a follower never holds an entry its leader could lose.
``AppendReply``    follower -> leader   after the ``Ready`` that persisted the entries: ``durable``
                                        is on the follower's disk when the reply leaves. One
                                        reply per ``Ready`` answers every ``Append`` it handled.
``SnapshotChunk``  leader -> follower   the follower needs entries the leader no longer keeps;
                                        the chunks are cut from an in-memory copy of the data at
                                        ``snapshot``, each with its CRC32C.
``SnapshotAck``    follower -> leader   on every chunk: the next chunk it needs (resume point).
                                        Chunks stay in memory until the last one arrives; the
                                        install (data, log reset) is one transaction.
``Forward``        follower -> leader   a client sent a write to a follower in ``forward`` mode.
``ForwardReply``   leader -> follower   the forwarded command's reply is due (after W copies).
=================  ===================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from chorusdb.core.api import ClientCommand
from chorusdb.core.model import LogEntry, Position


@dataclass(frozen=True, slots=True)
class Append:
    """Entries after ``prev`` (none: a heartbeat) and the leader's commit position.

    The follower appends them only if its log ends exactly at ``prev``; entries it already holds
    are skipped; on a gap it answers ``accepted=False`` with where its log ends.
    """

    source: str
    target: str
    epoch: int
    prev: Position
    entries: tuple[LogEntry, ...]
    commit: Position


@dataclass(frozen=True, slots=True)
class AppendReply:
    """The follower's durable log end, and whether the ``Append`` it answers fitted.

    ``incarnation`` is drawn at random each time the follower's process starts: an answer from
    an earlier process (delayed or duplicated) must not restore what the follower may have lost
    since, such as its whole data directory.
    """

    source: str
    target: str
    epoch: int
    durable: Position
    applied: Position
    accepted: bool
    incarnation: int


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Chunk ``chunk`` of ``chunks`` of the data at ``snapshot``; ``crc`` is CRC32C(``data``)."""

    source: str
    target: str
    epoch: int
    snapshot: Position
    chunk: int
    chunks: int
    data: bytes
    crc: int


@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """The follower holds chunks ``0 .. next_chunk - 1`` of the snapshot at ``snapshot``."""

    source: str
    target: str
    epoch: int
    snapshot: Position
    next_chunk: int


@dataclass(frozen=True, slots=True)
class Forward:
    """A client's write, sent on by a follower. ``(incarnation, sequence)`` identifies it, so
    the leader runs a duplicated ``Forward`` once."""

    source: str
    target: str
    epoch: int
    incarnation: int
    sequence: int
    command: ClientCommand


@dataclass(frozen=True, slots=True)
class ForwardReply:
    """The reply to the ``Forward`` ``(incarnation, sequence)``; ``position`` is where the write
    landed in the log (``ZERO_POSITION`` if it wrote nothing)."""

    source: str
    target: str
    epoch: int
    incarnation: int
    sequence: int
    value: object
    position: Position


LEADER_MESSAGE_TYPES = (Append, AppendReply, SnapshotChunk, SnapshotAck, Forward, ForwardReply)
