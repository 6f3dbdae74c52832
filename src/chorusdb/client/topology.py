"""What one node says of its cluster (``CHORUS.TOPOLOGY``), parsed into a ``Topology``.

Every node, leader or follower or standalone, answers ``CHORUS.TOPOLOGY`` with field names and
values, like ``CONFIG GET``::

    node n2  role follower  epoch 7  leader n1  applied 7:120  commit 7:120
    lag_entries 0  staleness_ms 3  members [[n1, 127.0.0.1:7001], [n2, ...], [n3, ...]]

``members`` lists every member with its client address, the answering node included; ``leader``
is empty while the node knows no leader (an election is running). A standalone node answers
role ``standalone`` and names itself leader and sole member, so the client treats it as a
cluster of one. Unknown fields are ignored, so a newer server can say more.

The answer is one node's view: a follower that has not heard of an election yet still names
the old leader. ``ClusterState`` (engine.py) therefore keeps the answer with the highest epoch
and asks again whenever the leader it names fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chorusdb.client.token import Token

NO_LEADER = ""


@dataclass(frozen=True, slots=True)
class Member:
    """One member: its id and the ``host:port`` its clients connect to."""

    node_id: str
    address: str


@dataclass(frozen=True, slots=True)
class Topology:
    """One node's answer to ``CHORUS.TOPOLOGY``. ``members`` are sorted by id, so every view of
    the same cluster iterates them in the same order."""

    node_id: str
    role: str
    epoch: int
    leader_id: str
    applied: Token
    commit: Token
    lag_entries: int
    staleness_ms: int
    members: tuple[Member, ...]

    @property
    def leader(self) -> Member | None:
        """The member the answering node names leader; None while it knows none."""
        return next((m for m in self.members if m.node_id == self.leader_id), None)

    @property
    def followers(self) -> tuple[Member, ...]:
        """Every member but the leader (all of them while no leader is known)."""
        return tuple(m for m in self.members if m.node_id != self.leader_id)

    def address_of(self, node_id: str) -> str | None:
        return next((m.address for m in self.members if m.node_id == node_id), None)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (str, int)):
        return str(value)
    raise ValueError(f"expected a string, got {value!r}")


def _fields(reply: object) -> dict[str, object]:
    """The field/value pairs of a flat array (RESP2) or a map (RESP3)."""
    if isinstance(reply, Mapping):
        return {_text(key): value for key, value in reply.items()}
    if not isinstance(reply, Sequence) or isinstance(reply, (bytes, str)) or len(reply) % 2:
        raise ValueError(f"CHORUS.TOPOLOGY answered {reply!r}, not field/value pairs")
    return {_text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}


def _members(value: object) -> tuple[Member, ...]:
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, str)):
        pairs = list(value)
    else:
        raise ValueError(f"members is {value!r}, not a list of [id, address] pairs")
    members = []
    for pair in pairs:
        if not isinstance(pair, Sequence) or isinstance(pair, (bytes, str)) or len(pair) != 2:
            raise ValueError(f"a member is {pair!r}, not an [id, address] pair")
        members.append(Member(_text(pair[0]), _text(pair[1])))
    if not members:
        raise ValueError("members is empty: a node always lists itself")
    return tuple(sorted(members, key=lambda m: m.node_id))


def parse_topology(reply: object) -> Topology:
    """A node's ``CHORUS.TOPOLOGY`` reply (bytes or str values, as redis-py decodes them) as a
    Topology; ValueError naming what is wrong otherwise."""
    fields = _fields(reply)
    missing = {"node", "role", "epoch", "leader", "members"} - fields.keys()
    if missing:
        raise ValueError(f"CHORUS.TOPOLOGY lacks {sorted(missing)}: {reply!r}")
    try:
        return Topology(
            node_id=_text(fields["node"]), role=_text(fields["role"]),
            epoch=int(_text(fields["epoch"])), leader_id=_text(fields["leader"] or NO_LEADER),
            applied=Token.parse(_text(fields.get("applied", "0:0"))),
            commit=Token.parse(_text(fields.get("commit", "0:0"))),
            lag_entries=int(_text(fields.get("lag_entries", 0))),
            staleness_ms=int(_text(fields.get("staleness_ms", -1))),
            members=_members(fields["members"]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"CHORUS.TOPOLOGY answer not understood ({e}): {reply!r}") from None
