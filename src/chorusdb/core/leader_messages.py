"""The peer messages of leader mode: who sends each, when, and what must be on disk first.

Every message names its ``source`` and ``target`` member and the sender's ``epoch`` (the leader
term). A receiver that sees a higher epoch than its own adopts it (a leader or candidate steps
down); an ``Append`` from a lower epoch is refused with the receiver's epoch, so a deposed leader
learns at once that it was deposed; other messages from a lower epoch are ignored. A pre-vote
``VoteRequest`` carries the epoch its candidate would run for, which nobody adopts; and a member
that still hears its leader ignores a real one (not even its epoch is adopted). Positions are
``(epoch, index)`` throughout.

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
``ForwardReply``   leader -> follower   the forwarded command's reply is due (after W copies); a
                                        member that does not lead answers ``-NOTLEADER`` (the
                                        follower retries with the leader it knows).
``VoteRequest``    candidate -> all     its election timeout passed with no word from a leader
                                        (a pre-vote), or it won the pre-vote (a vote: its raised
                                        epoch and its vote for itself are durable first), or a
                                        ``TimeoutNow`` came (``transfer``).
``VoteReply``      member -> candidate  on each request; a granted vote is durable before the
                                        reply leaves (it goes in the ``Ready`` that persists it).
``TimeoutNow``     leader -> follower   switchover: the target holds the leader's whole log.
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
    safe: Position              # held by enough members that every election keeps it
    sent_ms: int                # the leader's clock when it sent this; echoed in the reply


@dataclass(frozen=True, slots=True)
class AppendReply:
    """The follower's durable log end, and whether the ``Append`` it answers fitted.

    ``echo_ms`` is the highest ``sent_ms`` of the ``Append`` messages it answers: the leader
    knows this follower still followed it at that time of the leader's own clock (read-index
    and check-quorum use it; a reply delayed across a pause of the leader carries an old time).
    ``hint`` is where the leader should look for the last entry both logs share: the follower's
    log end after a gap, or the position before its first entry of the epoch that conflicted.

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
    echo_ms: int
    hint: Position


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


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """A candidate asks for a vote in ``epoch`` (a pre-vote: in the epoch it would run for,
    which nobody adopts). ``last`` is the candidate's log end: a voter grants only if it is at
    least its own. ``transfer``: a switchover, so voters that still hear a leader vote too."""

    source: str
    target: str
    epoch: int
    last: Position
    pre: bool
    transfer: bool


@dataclass(frozen=True, slots=True)
class VoteReply:
    """The answer to a ``VoteRequest`` of ``epoch``; a real vote leaves only after the vote is
    durable (it goes out in the ``Ready`` that persists it)."""

    source: str
    target: str
    epoch: int
    pre: bool
    granted: bool


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Switchover: the leader tells a caught-up follower to run an election at once."""

    source: str
    target: str
    epoch: int


LEADER_MESSAGE_TYPES = (Append, AppendReply, SnapshotChunk, SnapshotAck, Forward, ForwardReply,
                        VoteRequest, VoteReply, TimeoutNow)
