"""The peer protocol's vocabulary: every type that travels between nodes, and the handshake.

Peer frames (``wire.frames``: u32 length, then msgpack ``[version, message]``) are encoded by
``PEER_CODEC``, a ``DataclassCodec`` over ``PEER_TYPE_TAGS``. Its tags are a **wire format**:
two nodes of different versions must agree on them, so a tag is never reused for another type,
and a type whose fields change gets a new tag (or the protocol version moves). The values that
storage also encodes keep storage's tag numbers (``storage.encoding.STORAGE_TYPE_TAGS``), so one
number means one type everywhere; ``net`` may not import ``storage`` (same layer rank), so the
entries are repeated here and a test checks that they agree.

==== ===================== ==================================================================
tag  type                  where it travels
==== ===================== ==================================================================
1    ``Position``          inside leader messages and log entries (storage's tag)
2    ``Record``            inside snapshot-related values (storage's tag)
10   ``SetValue``          effect of a log entry inside ``Append`` (storage's tag)
11   ``PushItems``         effect of a log entry (storage's tag)
12   ``PopItems``          effect of a log entry (storage's tag)
13   ``DeleteKeys``        effect of a log entry (storage's tag)
14   ``SetExpiry``         effect of a log entry (storage's tag)
15   ``FlushAll``          effect of a log entry (storage's tag)
16   ``EpochStart``        effect of a log entry: the first of an epoch (storage's tag)
17   ``Request``           effect of a log entry: a CHORUS.ONCE write (storage's tag)
20   ``LogEntry``          inside ``Append`` (storage's tag)
45   ``ClientCommand``     inside ``Forward``: the client's command as it was sent
46   ``Simple``            inside ``ForwardReply``: a RESP simple string reply
47   ``Error``             inside ``ForwardReply``: a RESP error reply
50   ``Challenge``         handshake, acceptor -> dialer, first frame on every connection
51   ``Hello``             handshake, dialer -> acceptor, answers the challenge
52   ``Welcome``           handshake, acceptor -> dialer, the acceptor's proof; link is open
53   ``Refused``           handshake, acceptor -> dialer, why the connection is refused
60   ``Append``            leader messages (``core.leader_messages``), after the handshake
61   ``AppendReply``
62   ``SnapshotChunk``
63   ``SnapshotAck``
64   ``Forward``
65   ``ForwardReply``
66   ``VoteRequest``
67   ``VoteReply``
68   ``TimeoutNow``
70   ``PullRequest``       multi-leader messages (``core.multileader_messages``)
71   ``PullReply``
80   ``VersionWritten``    effect of a multi-leader log entry inside ``PullReply`` (storage's tag)
81   ``CounterChanged``    effect of a multi-leader log entry (storage's tag)
82   ``EventsAppended``    effect of a multi-leader log entry (storage's tag)
83   ``Version``           inside ``VersionWritten`` (storage's tag)
84   ``VersionVector``     inside ``VersionWritten`` and the pull messages (storage's tag)
85   ``Hlc``               inside the multi-leader effects (storage's tag)
==== ===================== ==================================================================

The handshake (mutual challenge-response with the cluster secret)::

    dialer                                         acceptor
      |  <----------- Challenge(acceptor_nonce) -----  connection accepted
      |  --- Hello(cluster_id, node_id, version, dialer_nonce,
      |            proof = dialer_proof(secret, acceptor_nonce, cluster_id, node_id)) -->
      |                                                checks cluster id, that node_id is a
      |                                                member, the version and the proof
      |  <-- Welcome(node_id, proof = acceptor_proof(secret, dialer_nonce, ...)) --
      |  checks that it reached the node it dialled and the proof; the link is open
      |  (or, instead of Welcome: <-- Refused(reason) --, and the acceptor closes)

Each side proves knowledge of the secret over a fresh nonce chosen by the other side, so a
recorded handshake cannot be replayed. A proof is HMAC-SHA256 keyed with the secret over a
transcript of length-prefixed parts — a role label, the nonce, the cluster id and the prover's
node id — so a dialer's proof can never be presented as an acceptor's (the labels differ) and
no two different (cluster id, node id) pairs share a transcript. Both sides compare proofs with
``hmac.compare_digest``. An empty secret (a local cluster with no ``cluster.secret_file``) runs
the same exchange: it succeeds only when both sides have it empty.

After the handshake a connection carries leader messages one way, dialer to acceptor. Reply
values in ``ForwardReply`` come back with every array as a **tuple** (the codec decodes arrays
so, since frozen dataclasses hold tuples); ``thaw_reply`` turns them back into the lists the
RESP encoder expects.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from types import MappingProxyType

from chorusdb.core.api import ClientCommand
from chorusdb.core.leader_messages import (
    Append,
    AppendReply,
    Forward,
    ForwardReply,
    SnapshotAck,
    SnapshotChunk,
    TimeoutNow,
    VoteReply,
    VoteRequest,
)
from chorusdb.core.causal import Hlc, Version, VersionVector
from chorusdb.core.model import (
    CounterChanged,
    DeleteKeys,
    EpochStart,
    EventsAppended,
    FlushAll,
    LogEntry,
    PopItems,
    Position,
    PushItems,
    Record,
    Request,
    SetExpiry,
    SetValue,
    VersionWritten,
)
from chorusdb.core.multileader_messages import PullReply, PullRequest
from chorusdb.replies import Error, Simple
from chorusdb.wire.codec import DataclassCodec

nonce_bytes = 32
"""Length of each side's handshake nonce (from ``secrets``; 256 bits never repeat)."""

DIALER_ROLE = b"chorusdb peer dialer"
ACCEPTOR_ROLE = b"chorusdb peer acceptor"


@dataclass(frozen=True, slots=True)
class Challenge:
    """The acceptor's first frame on a new connection: a fresh nonce the dialer must sign."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class Hello:
    """The dialer's answer to ``Challenge``: who it is, and ``proof`` =
    ``dialer_proof(secret, challenge.nonce, cluster_id, node_id)``; ``nonce`` is the dialer's
    own challenge to the acceptor."""

    cluster_id: str
    node_id: str
    version: int
    nonce: bytes
    proof: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    """The acceptor accepted ``Hello`` and proves itself: ``proof`` =
    ``acceptor_proof(secret, hello.nonce, cluster_id, node_id)``."""

    node_id: str
    proof: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """The acceptor refused ``Hello``; ``reason`` says why and what to check. It closes next."""

    reason: str


PEER_TYPE_TAGS = MappingProxyType({
    1: Position,
    2: Record,
    10: SetValue,
    11: PushItems,
    12: PopItems,
    13: DeleteKeys,
    14: SetExpiry,
    15: FlushAll,
    16: EpochStart,
    17: Request,
    20: LogEntry,
    45: ClientCommand,
    46: Simple,
    47: Error,
    50: Challenge,
    51: Hello,
    52: Welcome,
    53: Refused,
    60: Append,
    61: AppendReply,
    62: SnapshotChunk,
    63: SnapshotAck,
    64: Forward,
    65: ForwardReply,
    66: VoteRequest,
    67: VoteReply,
    68: TimeoutNow,
    70: PullRequest,
    71: PullReply,
    80: VersionWritten,
    81: CounterChanged,
    82: EventsAppended,
    83: Version,
    84: VersionVector,
    85: Hlc,
})
"""Tag -> type of everything that travels between peers; see the table in the module docstring."""

PEER_CODEC = DataclassCodec(PEER_TYPE_TAGS)

HANDSHAKE_TYPES = (Challenge, Hello, Welcome, Refused)


def _transcript(role: bytes, nonce: bytes, cluster_id: str, node_id: str) -> bytes:
    parts = (role, nonce, cluster_id.encode(), node_id.encode())
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def dialer_proof(secret: bytes, acceptor_nonce: bytes, cluster_id: str, node_id: str) -> bytes:
    """What dialer ``node_id`` sends in ``Hello`` to answer the acceptor's nonce."""
    transcript = _transcript(DIALER_ROLE, acceptor_nonce, cluster_id, node_id)
    return hmac.digest(secret, transcript, hashlib.sha256)


def acceptor_proof(secret: bytes, dialer_nonce: bytes, cluster_id: str, node_id: str) -> bytes:
    """What acceptor ``node_id`` sends in ``Welcome`` to answer the dialer's nonce."""
    transcript = _transcript(ACCEPTOR_ROLE, dialer_nonce, cluster_id, node_id)
    return hmac.digest(secret, transcript, hashlib.sha256)


def thaw_reply(value: object) -> object:
    """A reply value decoded from a peer frame, with every tuple turned back into a list.

    The codec decodes every array as a tuple; RESP replies use lists for arrays. Tuples become
    lists recursively, a dict keeps its keys and has its values thawed, and everything else
    (bytes, str, int, float, bool, None, ``Simple``, ``Error``) is returned as it is.
    """
    if type(value) is tuple:
        return [thaw_reply(item) for item in value]
    if type(value) is dict:
        return {key: thaw_reply(item) for key, item in value.items()}
    return value
