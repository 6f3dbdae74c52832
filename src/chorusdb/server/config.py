"""Node configuration: one TOML file per node, validated on load, overridable from the command line.

Every field is checked once, here, and a bad one raises ``ConfigError`` naming the field and what
was expected; the CLI turns it into one line on stderr and exit code 2, before anything starts.
Each node dials its peers at exactly the addresses its own file lists, so a test can put a proxy
on any link.

```toml
[node]
id = "n1"
data_dir = "data/n1"

[listen]
client = "127.0.0.1:7001"   # RESP
peer   = "127.0.0.1:7101"   # replication
admin  = "127.0.0.1:7201"   # HTTP

[cluster]
id = "demo"
mode = "standalone"         # standalone | leader | multi-leader | leaderless
secret_file = "data/cluster.secret"

[[cluster.members]]         # one table per member, this node included
id = "n1"
peer = "127.0.0.1:7101"
client = "127.0.0.1:7001"
candidate = true            # leader mode: false = votes, never leads (default true)
priority = 0                # leader mode: a higher one runs for election sooner (default 0)

[storage]
durability = "fsync"        # fsync: acknowledged means on disk | os: survives a process crash

[clients]
requirepass = ""            # non-empty: AUTH required
max = 10000                 # connected clients
idle_timeout_s = 0          # close idle clients after this many seconds; 0 = never

[leader]                    # only with mode = "leader"; every key optional
write_quorum = 2            # members, leader included, that hold a write before it is acknowledged
election_quorum = "majority"  # votes, the candidate's own included, that elect a leader
initial_leader = "n1"       # runs the first election at once (default: the first candidate)
election_timeout_min_ms = 500   # a follower that hears no leader for a random time in
election_timeout_max_ms = 1000  # [min, max) runs for election
switchover_timeout_ms = 5000    # CHORUS.SWITCHOVER gives up after this long

[multi_leader]              # only with mode = "multi-leader"; every key optional
policy = "siblings"         # siblings | lww | resolver: concurrent writes of a key
resolver = "mypkg.merge:pick"   # with policy = "resolver": module:function
topology = "all"            # all | star | ring: whom each node pulls from
siblings_max = 16           # concurrent versions kept per key
clock_offset_ms_max = 500   # lww writes refused while this node's clock is further ahead

[[multi_leader.policies]]   # per key prefix, longest prefix first; same keys as above
prefix = "cart:"
policy = "lww"
```

**Leader mode.** ``[leader]`` becomes ``NodeConfig.leader``, the core's own ``LeaderSettings``
(``core.leader`` says what each setting does), with ``write_quorum``, ``election_quorum`` and
``initial_leader`` resolved (majorities and the first candidate when not given),
``client_addresses`` taken from ``cluster.members`` (so ``-NOTLEADER`` names the address
clients use), and ``non_candidates`` and ``priorities`` from the members' ``candidate`` and
``priority`` (listing only the members whose priority is not 0); those two member keys are
errors in any other mode. Every member votes; at least one must be a candidate, and
``initial_leader`` must be one. ``NodeConfig.may_lose_acknowledged_writes`` is the settings'
W + Q <= N, or durability ``os``.

Timers must leave room for heartbeats: the contact, disconnection, write and switchover
timeouts are each longer than ``heartbeat_interval_ms``, and ``election_timeout_min_ms`` is
more than twice it (a follower must miss at least two heartbeats before it calls an election),
with ``election_timeout_max_ms`` above the minimum (the randomised spread is what keeps two
followers from splitting the vote forever). Unknown keys — in ``[leader]`` and in a member's
table — are errors, because a misspelt quorum or ``candidate`` silently taking its default is
the kind of mistake that loses writes.

**Multi-leader mode.** ``[multi_leader]`` becomes ``NodeConfig.multi_leader``, the core's
``MultiLeaderSettings`` (``core.multileader``): the default policy, per-prefix policies, the
topology and the bounds. A resolver is named ``module:function`` and imported here, at load
time, so a misspelt one stops the node with exit code 2; it is called with the siblings of a
key (``causal.Version`` tuples, sorted by dot) and must return the value to show (bytes, or
``None`` for absent), the same on every node.

**The cluster secret.** Peers prove knowledge of a shared secret in their handshake
(``net.protocol``). In every mode but standalone ``cluster.secret_file`` is read here, at load
time (so a missing file stops the node before it starts, exit code 2, with the command that
creates one); trailing whitespace is dropped, so ``head -c 32 /dev/urandom | base64 > FILE`` works. A
cluster of several members without a secret file still runs — every peer then proves the empty
secret, and the node logs a warning at start. Standalone mode never reads the file.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from chorusdb import limits
from chorusdb.core.causal import POLICIES, RESOLVER, Resolver
from chorusdb.core.leader import FOLLOWER_WRITES, LeaderSettings
from chorusdb.core.multileader import TOPOLOGIES, MultiLeaderCore, MultiLeaderSettings
from chorusdb.core.multileader_keyspace import KeyPolicy
from chorusdb.core.modes import CORES

DURABILITIES = ("fsync", "os")
STANDALONE = "standalone"
LEADER = LeaderSettings.mode
MULTI_LEADER = MultiLeaderCore.mode
MAJORITY = "majority"

LEADER_TIMER_KEYS = ("write_timeout_ms", "heartbeat_interval_ms", "election_timeout_min_ms",
                     "election_timeout_max_ms", "switchover_timeout_ms", "append_resend_ms",
                     "quorum_contact_ms", "follower_disconnected_ms")
LEADER_RETENTION_KEYS = ("log_retention_entries", "log_retention_bytes", "log_retention_age_ms",
                         "log_hold_entries_max")
LEADER_KEYS = ("write_quorum", "election_quorum", "initial_leader", "follower_writes",
               *LEADER_TIMER_KEYS, *LEADER_RETENTION_KEYS)
TIMERS_LONGER_THAN_HEARTBEAT = ("quorum_contact_ms", "follower_disconnected_ms",
                                "write_timeout_ms", "switchover_timeout_ms")
MEMBER_KEYS = ("id", "peer", "client", "candidate", "priority")
MEMBER_LEADER_KEYS = ("candidate", "priority")

cluster_secret_bytes_min = 16     # shorter secrets are refused (a base64 of 32 random bytes: 44)
cluster_secret_bytes_max = 4096   # a secret file larger than this is not a secret file
election_timeout_heartbeats_min = 2   # heartbeats a follower misses before it may run


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``field`` is its dotted name.

    The message is one line, ``field: expected WHAT, got VALUE``, or ``field: PROBLEM`` when the
    trouble is not a single bad value (a file that cannot be read, a section in the wrong mode).
    """

    def __init__(self, field_name: str, expected: str = "", got: object = None, *,
                 problem: str = "") -> None:
        assert bool(expected) != bool(problem), (expected, problem)
        shown = "" if got is None else f", got {got!r}"
        super().__init__(f"{field_name}: {problem or f'expected {expected}{shown}'}")
        self.field = field_name


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Member:
    """One ``[[cluster.members]]`` table. ``candidate`` and ``priority`` matter in leader mode
    only: a member that is not a candidate votes but never runs for election, and a higher
    priority runs sooner."""

    id: str
    peer: Address
    client: Address
    candidate: bool = True
    priority: int = 0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A node's validated configuration.

    ``leader`` is resolved in leader mode (``write_quorum``, ``election_quorum`` and
    ``initial_leader`` set, ``client_addresses``, ``non_candidates`` and ``priorities`` filled
    from the members) and the core's defaults otherwise.
    ``cluster_secret`` is the content of ``secret_file`` outside standalone mode, else empty.
    """

    node_id: str
    data_dir: Path
    client: Address
    peer: Address
    admin: Address
    cluster_id: str
    mode: str
    secret_file: Path | None
    members: tuple[Member, ...]
    durability: str = "fsync"
    requirepass: str = ""
    clients_max: int = limits.clients_max
    client_idle_timeout_s: float = limits.client_idle_timeout_s_default
    debug_commands: bool = False
    leader: LeaderSettings = LeaderSettings()
    multi_leader: MultiLeaderSettings = MultiLeaderSettings()
    cluster_secret: bytes = field(default=b"", repr=False)

    @property
    def core_settings(self) -> object:
        """The mode's own settings, ``CoreConfig.settings`` (``None`` for standalone)."""
        return {LEADER: self.leader, MULTI_LEADER: self.multi_leader}.get(self.mode)

    @property
    def member_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.members)

    @property
    def write_quorum(self) -> int:
        """W: members, the leader included, that hold a write before it is acknowledged."""
        return self.leader.quorum(len(self.members)) if self.mode == LEADER else 1

    @property
    def election_quorum(self) -> int:
        """Q: the votes that elect a leader (1 outside leader mode: nobody is elected)."""
        return self.leader.votes_needed(len(self.members)) if self.mode == LEADER else 1

    @property
    def may_lose_acknowledged_writes(self) -> bool:
        """True when a crash or a failover can lose an acknowledged write: durability ``os``
        (a power loss), or in leader mode W + Q <= N (an election quorum that need not meet a
        write quorum)."""
        return self.durability != "fsync" or (
            self.mode == LEADER and self.leader.may_lose_acknowledged_writes(len(self.members)))


def parse_address(field_name: str, value: object) -> Address:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(field_name, "HOST:PORT", value)
    host, _, port_text = value.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(field_name, "HOST:PORT with a port in 0..65535", value)
    return Address(host.strip("[]"), int(port_text))


def _table(doc: dict, name: str) -> dict:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(name, "a table", value)
    return value


def _string(table: dict, section: str, key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise ConfigError(f"{section}.{key}", "a non-empty string", value)
    return value


def _number(table: dict, section: str, key: str, default: float, minimum: float,
            integer: bool) -> float:
    value = table.get(key, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{section}.{key}", f"{kind} >= {minimum}", value)
    return value


KNOWN_SECTIONS = ("node", "listen", "cluster", "storage", "clients", "leader", "multi_leader")
MULTI_LEADER_KEYS = ("policy", "resolver", "topology", "siblings_max", "clock_offset_ms_max",
                     "policies")
MULTI_LEADER_POLICY_KEYS = ("prefix", "policy", "resolver")


def parse_config(doc: dict, base_dir: Path) -> NodeConfig:
    """Validate a parsed TOML document; relative paths are taken from ``base_dir``."""
    for section in doc:
        if section not in KNOWN_SECTIONS:
            raise ConfigError(section, f"one of the sections {', '.join(KNOWN_SECTIONS)}", section)
    node = _table(doc, "node")
    listen = _table(doc, "listen")
    cluster = _table(doc, "cluster")
    storage = _table(doc, "storage")
    clients = _table(doc, "clients")

    node_id = _string(node, "node", "id")
    data_dir = base_dir / _string(node, "node", "data_dir")
    client = parse_address("listen.client", listen.get("client"))
    admin = parse_address("listen.admin", listen.get("admin"))

    cluster_id = _string(cluster, "cluster", "id", "chorus")
    mode = cluster.get("mode", STANDALONE)
    if mode not in CORES:
        raise ConfigError("cluster.mode", f"one of {', '.join(sorted(CORES))}", mode)
    secret = cluster.get("secret_file")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError("cluster.secret_file", "a file path", secret)
    secret_file = None if secret is None else base_dir / secret
    # listen.peer defaults to where the members dial this node (a proxy in between is the
    # reason the two may differ); a node with no member list has no peers and any port does.
    peer = None if "peer" not in listen else parse_address("listen.peer", listen["peer"])
    members = _parse_members(cluster.get("members"), node_id, client,
                             peer or Address(client.host, 0), mode)
    if peer is None:
        peer = next(m.peer for m in members if m.id == node_id)
    if mode == STANDALONE and len(members) != 1:
        raise ConfigError("cluster.members", "exactly one member (this node) in standalone mode",
                          len(members))
    if mode != LEADER and "leader" in doc:
        raise ConfigError("leader", problem=f'leader settings need cluster.mode = "{LEADER}" '
                                            f'(it is {mode!r})')
    leader = _parse_leader(_table(doc, "leader"), members) if mode == LEADER else LeaderSettings()
    if mode != MULTI_LEADER and "multi_leader" in doc:
        raise ConfigError("multi_leader", problem=f'multi_leader settings need cluster.mode = '
                                                  f'"{MULTI_LEADER}" (this file says {mode!r})')
    multi_leader = (_parse_multi_leader(_table(doc, "multi_leader")) if mode == MULTI_LEADER
                    else MultiLeaderSettings())

    durability = storage.get("durability", "fsync")
    if durability not in DURABILITIES:
        raise ConfigError("storage.durability", " or ".join(map(repr, DURABILITIES)), durability)
    requirepass = clients.get("requirepass", "")
    if not isinstance(requirepass, str):
        raise ConfigError("clients.requirepass", "a string", requirepass)

    return NodeConfig(
        node_id=node_id,
        data_dir=data_dir,
        client=client,
        peer=peer,
        admin=admin,
        cluster_id=cluster_id,
        mode=mode,
        secret_file=secret_file,
        members=members,
        durability=durability,
        requirepass=requirepass,
        clients_max=int(_number(clients, "clients", "max", limits.clients_max, 1, True)),
        client_idle_timeout_s=_number(clients, "clients", "idle_timeout_s",
                                      limits.client_idle_timeout_s_default, 0, False),
        leader=leader,
        multi_leader=multi_leader,
        cluster_secret=(b"" if mode == STANDALONE or secret_file is None
                        else read_cluster_secret(secret_file)),
    )


def _parse_leader(table: dict, members: tuple[Member, ...]) -> LeaderSettings:
    """The ``[leader]`` table and the members' leader-mode keys as resolved ``LeaderSettings``."""
    for key in table:
        if key not in LEADER_KEYS:
            raise ConfigError(f"leader.{key}", f"one of the keys {', '.join(LEADER_KEYS)}", key)
    candidates = tuple(m.id for m in members if m.candidate)
    if not candidates:
        raise ConfigError("cluster.members", problem="no member is a candidate (candidate = "
                                                     "false on every one), so no leader can "
                                                     "ever be elected; make one a candidate")
    defaults = LeaderSettings()
    initial_leader = table.get("initial_leader", candidates[0])
    if initial_leader not in candidates:
        raise ConfigError("leader.initial_leader",
                          f"a candidate member id ({', '.join(candidates)})", initial_leader)
    follower_writes = table.get("follower_writes", defaults.follower_writes)
    if follower_writes not in FOLLOWER_WRITES:
        raise ConfigError("leader.follower_writes", " or ".join(map(repr, FOLLOWER_WRITES)),
                          follower_writes)
    numbers = {key: int(_number(table, "leader", key, getattr(defaults, key), 1, True))
               for key in (*LEADER_TIMER_KEYS, *LEADER_RETENTION_KEYS)}
    heartbeat_ms = numbers["heartbeat_interval_ms"]
    for key in TIMERS_LONGER_THAN_HEARTBEAT:
        if numbers[key] <= heartbeat_ms:
            raise ConfigError(f"leader.{key}",
                              f"more than leader.heartbeat_interval_ms ({heartbeat_ms})",
                              numbers[key])
    _check_election_timeouts(numbers)
    if numbers["log_hold_entries_max"] < numbers["log_retention_entries"]:
        raise ConfigError("leader.log_hold_entries_max",
                          f"at least leader.log_retention_entries "
                          f"({numbers['log_retention_entries']})",
                          numbers["log_hold_entries_max"])
    return LeaderSettings(
        write_quorum=_quorum(table, "write_quorum", len(members)),
        election_quorum=_quorum(table, "election_quorum", len(members)),
        initial_leader=initial_leader,
        follower_writes=follower_writes,
        client_addresses=tuple((m.id, str(m.client)) for m in members),
        non_candidates=tuple(m.id for m in members if not m.candidate),
        priorities=tuple((m.id, m.priority) for m in members if m.priority),
        **numbers,
    )


def _parse_multi_leader(table: dict) -> MultiLeaderSettings:
    """The ``[multi_leader]`` table as ``MultiLeaderSettings`` (resolvers imported)."""
    for key in table:
        if key not in MULTI_LEADER_KEYS:
            raise ConfigError(f"multi_leader.{key}",
                              f"one of the keys {', '.join(MULTI_LEADER_KEYS)}", key)
    defaults = MultiLeaderSettings()
    default_policy, default_resolver = _policy(table, "multi_leader", defaults.default_policy)
    topology = table.get("topology", defaults.topology)
    if topology not in TOPOLOGIES:
        raise ConfigError("multi_leader.topology", " or ".join(TOPOLOGIES), topology)
    raw_policies = table.get("policies", [])
    if not isinstance(raw_policies, list):
        raise ConfigError("multi_leader.policies", "an array of tables ([[multi_leader.policies]])",
                          raw_policies)
    policies = []
    for index, entry in enumerate(raw_policies):
        section = f"multi_leader.policies[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(section, "a table with prefix and policy", entry)
        for key in entry:
            if key not in MULTI_LEADER_POLICY_KEYS:
                raise ConfigError(f"{section}.{key}",
                                  f"one of the keys {', '.join(MULTI_LEADER_POLICY_KEYS)}", key)
        prefix = _string(entry, section, "prefix")
        if any(prefix == other.prefix.decode() for other in policies):
            raise ConfigError(f"{section}.prefix", "a prefix no other policy names", prefix)
        policy, resolver = _policy(entry, section, None)
        policies.append(KeyPolicy(prefix.encode(), policy, resolver))
    return MultiLeaderSettings(
        default_policy=default_policy, default_resolver=default_resolver,
        policies=tuple(policies), topology=topology,
        siblings_max=int(_number(table, "multi_leader", "siblings_max", defaults.siblings_max,
                                 1, True)),
        clock_offset_ms_max=int(_number(table, "multi_leader", "clock_offset_ms_max",
                                        defaults.clock_offset_ms_max, 1, True)))


def _policy(table: dict, section: str, default: str | None) -> tuple[str, Resolver | None]:
    """A table's ``policy`` and, for ``resolver``, the imported ``resolver`` function."""
    policy = table.get("policy", default)
    if policy not in POLICIES:
        raise ConfigError(f"{section}.policy", " or ".join(POLICIES), policy)
    name = table.get("resolver")
    if (policy == RESOLVER) != (name is not None):
        raise ConfigError(f"{section}.resolver", problem=(
            'policy = "resolver" needs resolver = "module:function"' if name is None
            else f'a resolver is used only with policy = "resolver" (policy is {policy!r})'))
    return policy, None if name is None else _import_resolver(f"{section}.resolver", name)


def _import_resolver(field_name: str, name: object) -> Resolver:
    if not isinstance(name, str) or name.count(":") != 1:
        raise ConfigError(field_name, '"module:function"', name)
    module_name, function_name = name.split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(field_name, problem=f"cannot import {name}: {error}; check the name "
                                              f"and that the module is on PYTHONPATH") from None
    if not callable(function):
        raise ConfigError(field_name, "a callable", name)
    return function


def _check_election_timeouts(numbers: dict[str, int]) -> None:
    """A follower misses more than ``election_timeout_heartbeats_min`` heartbeats before it
    calls an election, and the timeout is drawn from a range that is not empty."""
    heartbeat_ms = numbers["heartbeat_interval_ms"]
    least_ms, most_ms = numbers["election_timeout_min_ms"], numbers["election_timeout_max_ms"]
    if least_ms <= election_timeout_heartbeats_min * heartbeat_ms:
        raise ConfigError("leader.election_timeout_min_ms",
                          f"more than {election_timeout_heartbeats_min} x "
                          f"leader.heartbeat_interval_ms "
                          f"({election_timeout_heartbeats_min * heartbeat_ms})", least_ms)
    if most_ms <= least_ms:
        raise ConfigError("leader.election_timeout_max_ms",
                          f"more than leader.election_timeout_min_ms ({least_ms})", most_ms)


def _quorum(table: dict, key: str, member_count: int) -> int:
    """``"majority"`` (the default) or a number of members in 1..N, as a number."""
    value = table.get(key, MAJORITY)
    if value == MAJORITY:
        return member_count // 2 + 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= member_count:
        raise ConfigError(f"leader.{key}", f'"{MAJORITY}" or an integer in 1..{member_count} '
                                           f"(the number of members)", value)
    return value


def read_cluster_secret(path: Path) -> bytes:
    """The secret in ``path`` without trailing whitespace; ``ConfigError`` if it cannot be used."""
    recipe = f"create it with: head -c 32 /dev/urandom | base64 > {path}"
    try:
        with open(path, "rb") as f:
            secret = f.read(cluster_secret_bytes_max + 1).rstrip()
    except OSError as e:
        raise ConfigError("cluster.secret_file",
                          problem=f"cannot read {path} ({e.strerror}); {recipe}") from None
    if len(secret) > cluster_secret_bytes_max:
        raise ConfigError("cluster.secret_file", problem=f"{path} is larger than "
                                                         f"{cluster_secret_bytes_max} bytes; "
                                                         f"{recipe}")
    if len(secret) < cluster_secret_bytes_min:
        raise ConfigError("cluster.secret_file", problem=f"{path} holds {len(secret)} bytes, "
                                                         f"fewer than {cluster_secret_bytes_min}; "
                                                         f"{recipe}")
    return secret


def _parse_members(raw: object, node_id: str, client: Address, peer: Address,
                   mode: str) -> tuple[Member, ...]:
    if raw is None:
        return (Member(node_id, peer, client),)
    if not isinstance(raw, list) or not raw:
        raise ConfigError("cluster.members", "a non-empty array of tables", raw)
    members: list[Member] = []
    for i, item in enumerate(raw):
        where = f"cluster.members[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(where, "a table with id, peer and client", item)
        for key in item:
            if key not in MEMBER_KEYS:
                raise ConfigError(f"{where}.{key}", f"one of the keys {', '.join(MEMBER_KEYS)}",
                                  key)
            if key in MEMBER_LEADER_KEYS and mode != LEADER:
                raise ConfigError(f"{where}.{key}", problem=f'only with cluster.mode = '
                                                            f'"{LEADER}" (it is {mode!r})')
        member_id = _string(item, where, "id")
        if any(m.id == member_id for m in members):
            raise ConfigError(f"{where}.id", "a member id used once", member_id)
        candidate = item.get("candidate", True)
        if not isinstance(candidate, bool):
            raise ConfigError(f"{where}.candidate", "true or false", candidate)
        members.append(Member(member_id, parse_address(f"{where}.peer", item.get("peer")),
                              parse_address(f"{where}.client", item.get("client")), candidate,
                              int(_number(item, where, "priority", 0, 0, True))))
    if not any(m.id == node_id for m in members):
        raise ConfigError("cluster.members", f"a member with this node's id {node_id!r}")
    return tuple(members)


def load_config(path: Path) -> NodeConfig:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("--config", "an existing file", str(path)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"valid TOML ({e})") from None
    return parse_config(doc, path.parent)


def apply_overrides(config: NodeConfig, *, client: str | None = None, admin: str | None = None,
                    peer: str | None = None, data_dir: str | None = None,
                    durability: str | None = None, requirepass: str | None = None,
                    debug_commands: bool = False) -> NodeConfig:
    """Command-line flags win over the file; validated the same way."""
    changes: dict = {"debug_commands": debug_commands or config.debug_commands}
    if client is not None:
        changes["client"] = parse_address("--client", client)
    if admin is not None:
        changes["admin"] = parse_address("--admin", admin)
    if peer is not None:
        changes["peer"] = parse_address("--peer", peer)
    if data_dir is not None:
        changes["data_dir"] = Path(data_dir)
    if durability is not None:
        if durability not in DURABILITIES:
            raise ConfigError("--durability", " or ".join(map(repr, DURABILITIES)), durability)
        changes["durability"] = durability
    if requirepass is not None:
        changes["requirepass"] = requirepass
    return replace(config, **changes)
