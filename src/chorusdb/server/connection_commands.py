"""Commands about the connection and the server, answered at the edge without the core.

PING, ECHO, AUTH, HELLO, SELECT, INFO, ROLE, CLIENT, COMMAND, QUIT, RESET, CHORUS.TOPOLOGY and
CHORUS.CONSISTENCY change only the connection's own state (protocol version, name,
authentication, read level) or describe the node, so they never enter the replication log.
Their replies follow Redis 7 closely enough that redis-py,
redis-cli and redis-benchmark cannot tell the difference.

ROLE and ``INFO replication`` translate the core's ``status()`` into Redis's replication
vocabulary: a leader (or a standalone node) is a ``master`` whose offset is its log index, a
follower is a ``slave`` of the leader's client address whose offset is its applied index, and
each follower's client address comes from ``cluster.members``. Redis's own fields keep their
meaning (``lag`` is seconds since the replica last answered, the link is ``up`` while the
leader was heard within ``follower_disconnected_ms``); everything Redis has no word for —
epoch, quorum, commit index, entries behind — follows as ``chorus_*`` fields. In leader mode
that includes failover: elections started, won and lost, how long the node has been without a
known leader, how long the last failover took (-1: none yet), divergent entries pending and
in all, whether the node is a candidate and its priority, and a switchover in progress.

``CHORUS.DEBUG`` is the fault-injection command of the chaos harness, answered only by a node
started with ``--enable-debug-commands`` (any other refuses it and changes nothing).
``CHORUS.DEBUG CLOCKSKEW <delta_ms>`` adds ``delta_ms`` to the node's clock offset and answers
the new offset. It is deliberately absent from the command table: ``COMMAND`` does not list it
and clients never learn of it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import platform
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chorusdb.core.commands import COMMANDS, Argument, CommandSpec, KeySpec, check_arity
from chorusdb.replies import OK, PONG, Error, Simple, wrong_arity

if TYPE_CHECKING:
    from chorusdb.server.node import Node

REDIS_VERSION = "7.2.0"      # what we report: redis-py and redis-cli gate features on it
CONNECTION_COMMAND_NAMES = frozenset({b"PING", b"ECHO", b"AUTH", b"HELLO", b"SELECT", b"INFO",
                                      b"ROLE", b"CLIENT", b"COMMAND", b"QUIT", b"RESET",
                                      b"CHORUS.TOPOLOGY", b"CHORUS.CONSISTENCY"})
CONSISTENCY_LEVELS = (b"STALE", b"LINEARIZABLE")
DEBUG_COMMAND_NAME = b"CHORUS.DEBUG"
client_name_bytes_max = 256

WRONGPASS = Error("WRONGPASS invalid username-password pair or user is disabled.")
NO_PASSWORD_SET = Error("ERR AUTH <password> called without any password configured for the "
                        "default user. Are you sure your configuration is correct?")
DEBUG_DISABLED = Error("ERR debug commands are disabled; start the node with "
                       "--enable-debug-commands")
DEBUG_USAGE = Error("ERR usage: CHORUS.DEBUG CLOCKSKEW <delta_ms>")
INFO_SECTIONS = ("server", "clients", "memory", "persistence", "replication", "keyspace")


@dataclass(slots=True)
class ConnectionState:
    client_id: int
    authenticated: bool
    protocol: int = 2
    name: str = ""
    lib_name: str = ""
    lib_ver: str = ""
    address: str = "?"
    created: float = field(default_factory=time.monotonic)
    quit_requested: bool = False
    linearizable_reads: bool = False    # CHORUS.CONSISTENCY (or WAITPOS ... LINEARIZABLE)


def run_connection_command(node: Node, state: ConnectionState, name: bytes,
                           args: list[bytes]) -> object:
    if name == DEBUG_COMMAND_NAME:
        return _debug(node, args[1:])
    spec = COMMANDS[name]
    if not check_arity(spec, len(args)):
        return wrong_arity(spec.name)
    return _HANDLERS[name](node, state, args[1:])


def _debug(node: Node, args: list[bytes]) -> object:
    if not node.config.debug_commands:
        return DEBUG_DISABLED
    if len(args) != 2 or args[0].upper() != b"CLOCKSKEW":
        return DEBUG_USAGE
    try:
        delta_ms = int(args[1])
    except ValueError:
        return Error("ERR value is not an integer or out of range")
    return node.skew_clock(delta_ms)


def _ping(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    if len(args) > 1:
        return wrong_arity("ping")
    return args[0] if args else PONG


def _echo(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    return args[0]


def _authenticate(node: Node, state: ConnectionState, user: bytes, password: bytes) -> object:
    expected = node.config.requirepass
    if not expected:
        return NO_PASSWORD_SET
    if user != b"default" or not hmac.compare_digest(password, expected.encode()):
        return WRONGPASS
    state.authenticated = True
    return OK


def _auth(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    if len(args) > 2:
        return Error("ERR syntax error")
    user, password = (b"default", args[0]) if len(args) == 1 else (args[0], args[1])
    return _authenticate(node, state, user, password)


def _hello(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    protocol = state.protocol
    if args:
        try:
            protocol = int(args[0])
        except ValueError:
            return Error("ERR Protocol version is not an integer or out of range")
        if protocol not in (2, 3):
            return Error("NOPROTO unsupported protocol version")
    rest = args[1:]
    pending_name = None
    while rest:
        option = rest[0].upper()
        if option == b"AUTH" and len(rest) >= 3:
            outcome = _authenticate(node, state, rest[1], rest[2])
            if outcome is not OK:
                return outcome
            rest = rest[3:]
        elif option == b"SETNAME" and len(rest) >= 2:
            pending_name = rest[1]
            rest = rest[2:]
        else:
            return Error(f"ERR Syntax error in HELLO option '{rest[0].decode('utf-8', 'replace')}'")
    if not state.authenticated:
        return Error("NOAUTH HELLO must be called with the client already authenticated, "
                     "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                     "authenticate the client and select the RESP protocol version at the same "
                     "time")
    if pending_name is not None:
        state.name = pending_name.decode("utf-8", "replace")
    state.protocol = protocol
    return {
        b"server": b"redis",
        b"version": REDIS_VERSION.encode(),
        b"proto": protocol,
        b"id": state.client_id,
        b"mode": b"standalone",
        b"role": b"master" if node.is_writable_role() else b"replica",
        b"modules": [],
    }


def _select(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    if args[0] != b"0":
        try:
            int(args[0])
        except ValueError:
            return Error("ERR value is not an integer or out of range")
        return Error("ERR DB index is out of range")
    return OK


def _quit(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    state.quit_requested = True
    return OK


def _reset(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    state.protocol = 2
    state.name = ""
    state.authenticated = not node.config.requirepass
    return Simple("RESET")


def _role(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    """Redis's shape: ``[master, offset, [[ip, port, offset], ...]]`` listing the followers
    that stream (Redis lists only replicas that are online), ip, port and offset as strings;
    ``[slave, leader ip, leader port, link state, applied index]`` on a follower."""
    status = node.core.status()
    if node.is_writable_role():
        followers = [[host.encode(), str(port).encode(),
                      str(member["durable_position"]["index"]).encode()]
                     for host, port, member in _followers(node, status, ("streaming",))]
        return [b"master", status["position"]["index"], followers]
    host, port = _leader_address(node)
    return [b"slave", host.encode(), port, _link_state(node, status).encode(),
            _applied_index(status)]


def _consistency(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    """``CHORUS.CONSISTENCY [LINEARIZABLE|STALE]``: the connection's read level (the server
    marks its commands ``ClientCommand.linearizable``; the core refuses such reads off the
    leader)."""
    if not args:
        return Simple(CONSISTENCY_LEVELS[state.linearizable_reads].decode().lower())
    level = args[0].upper()
    if len(args) > 1 or level not in CONSISTENCY_LEVELS:
        return Error("ERR CHORUS.CONSISTENCY takes linearizable or stale")
    state.linearizable_reads = level == b"LINEARIZABLE"
    return OK


def _topology(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    """What a cluster-aware client needs to route: field names and values, like CONFIG GET.
    ``members`` pairs every member id with its client address (a standalone node: itself);
    ``staleness_ms`` is -1 on a node that never held the leader's commit since it started."""
    status = node.core.status()
    members = node.config.members
    addresses = ([[member.id.encode(), str(member.client).encode()] for member in members]
                 if members else [[node.config.node_id.encode(), str(node.config.client).encode()]])
    applied = status.get("applied_position", status["position"])
    commit = status["commit_position"]
    staleness = status["staleness_ms"]
    return [b"node", node.config.node_id.encode(), b"role", status["role"].encode(),
            b"epoch", status["epoch"], b"leader", (status["leader_id"] or "").encode(),
            b"applied", b"%d:%d" % (applied["epoch"], applied["index"]),
            b"commit", b"%d:%d" % (commit["epoch"], commit["index"]),
            b"lag_entries", status["lag_entries"],
            b"staleness_ms", -1 if staleness is None else staleness,
            b"members", addresses]


# --- replication facts shared by ROLE and INFO ----------------------------------------------

# A follower's state in /status -> the replica state Redis shows in INFO's slaveN lines.
# Disconnected followers are not connected replicas, so Redis would not list them.
REDIS_REPLICA_STATES = {"streaming": "online", "snapshotting": "send_bulk"}


def _followers(node: Node, status: dict, states: tuple[str, ...]) -> list[tuple[str, int, dict]]:
    """``(client host, client port, member status)`` of the followers in one of ``states``,
    in the order of ``/status``."""
    clients = {member.id: member.client for member in node.config.members}
    return [(clients[m["id"]].host, clients[m["id"]].port, m)
            for m in status["members"] if m.get("state") in states]


def _leader_address(node: Node) -> tuple[str, int]:
    leader = node.leader_client_address()
    return (leader.host, leader.port) if leader is not None else ("?", 0)


def _link_is_up(node: Node, status: dict) -> bool:
    """The leader was heard within ``follower_disconnected_ms``: the bound after which the
    leader counts a silent follower as disconnected serves the other direction too."""
    contact_ms_ago = status.get("leader_contact_ms_ago")
    return contact_ms_ago is not None \
        and contact_ms_ago <= node.config.leader.follower_disconnected_ms


def _link_state(node: Node, status: dict) -> str:
    """ROLE's replica state: ``sync`` while a snapshot is being received, ``connected`` while
    the leader was heard within ``follower_disconnected_ms``, else ``connect``."""
    if status.get("snapshot_receiving"):
        return "sync"
    return "connected" if _link_is_up(node, status) else "connect"


def _applied_index(status: dict) -> int:
    """The applied index; a standalone node applies every entry as it appends it."""
    return status.get("applied_position", status["position"])["index"]


def replication_id(cluster_id: str, epoch: int) -> str:
    """INFO's ``master_replid``: 40 hex digits shared by every member of a cluster within one
    epoch, and new with every epoch — as a Redis replication id is shared by a master and its
    replicas and changes on failover."""
    return hashlib.sha1(f"{cluster_id}/{epoch}".encode()).hexdigest()


# --- CLIENT -----------------------------------------------------------------------------------


def _client(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    sub = args[0].upper()
    if sub == b"ID" and len(args) == 1:
        return state.client_id
    if sub == b"GETNAME" and len(args) == 1:
        return state.name.encode() if state.name else None
    if sub == b"SETNAME" and len(args) == 2:
        name = args[1]
        if len(name) > client_name_bytes_max or any(c <= 32 or c > 126 for c in name):
            return Error("ERR Client names cannot contain spaces, newlines or special characters.")
        state.name = name.decode()
        return OK
    if sub == b"SETINFO" and len(args) == 3:
        attribute = args[1].upper()
        value = args[2].decode("utf-8", "replace")
        if attribute == b"LIB-NAME":
            state.lib_name = value
        elif attribute == b"LIB-VER":
            state.lib_ver = value
        else:
            return Error(f"ERR Unrecognized option '{args[1].decode('utf-8', 'replace')}'")
        return OK
    if sub == b"LIST" and len(args) == 1:
        return "".join(_client_line(other.state) + "\n"
                       for other in sorted(node.clients, key=lambda c: c.state.client_id)).encode()
    if sub == b"INFO" and len(args) == 1:
        return (_client_line(state) + "\n").encode()
    if sub in (b"ID", b"GETNAME", b"SETNAME", b"SETINFO", b"LIST", b"INFO"):
        return wrong_arity(f"client|{sub.decode().lower()}")
    return Error(f"ERR unknown subcommand '{args[0].decode('utf-8', 'replace')}'. "
                 "Try CLIENT HELP.")


def _client_line(state: ConnectionState) -> str:
    age = int(time.monotonic() - state.created)
    return (f"id={state.client_id} addr={state.address} name={state.name} age={age} db=0 "
            f"resp={state.protocol} lib-name={state.lib_name} lib-ver={state.lib_ver}")


# --- COMMAND ----------------------------------------------------------------------------------


def _command_info(spec: CommandSpec) -> list:
    """One entry of COMMAND / COMMAND INFO, the ten fields of Redis 7."""
    return [spec.name.encode(), spec.arity, [Simple(f) for f in spec.flags], spec.first_key,
            spec.last_key, spec.step, [Simple(c) for c in spec.acl_categories],
            [t.encode() for t in spec.tips], [_key_spec(k) for k in spec.key_specs],
            [_command_info(sub) for sub in spec.subcommands]]


def _key_spec(key_spec: KeySpec) -> dict:
    return {b"flags": [Simple(f) for f in key_spec.flags],
            b"begin_search": {b"type": b"index", b"spec": {b"index": key_spec.begin_index}},
            b"find_keys": {b"type": b"range",
                           b"spec": {b"lastkey": key_spec.last_key,
                                     b"keystep": key_spec.key_step,
                                     b"limit": key_spec.limit}}}


def _argument_doc(argument: Argument) -> dict:
    doc: dict = {b"name": argument.name.encode(), b"type": argument.type.encode()}
    if argument.display_text:
        doc[b"display_text"] = argument.display_text.encode()
    if argument.key_spec_index >= 0:
        doc[b"key_spec_index"] = argument.key_spec_index
    if argument.token:
        doc[b"token"] = argument.token.encode()
    if argument.flags:
        doc[b"flags"] = [Simple(f) for f in argument.flags]
    if argument.value:
        doc[b"arguments"] = [_argument_doc(child) for child in argument.value]
    return doc


def _command_docs(spec: CommandSpec) -> dict:
    """One entry of COMMAND DOCS: what redis-cli builds its hints from."""
    doc: dict = {b"summary": spec.summary.encode(), b"since": spec.since.encode(),
                 b"group": spec.group.encode(), b"complexity": spec.complexity.encode()}
    if spec.doc_flags:
        doc[b"doc_flags"] = [Simple(f) for f in spec.doc_flags]
    if spec.deprecated_since:
        doc[b"deprecated_since"] = spec.deprecated_since.encode()
        doc[b"replaced_by"] = spec.replaced_by.encode()
    if spec.arguments:
        doc[b"arguments"] = [_argument_doc(a) for a in spec.arguments]
    if spec.subcommands:
        doc[b"subcommands"] = {sub.name.encode(): _command_docs(sub) for sub in spec.subcommands}
    return doc


def _command(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    if not args:
        return [_command_info(spec) for spec in COMMANDS.values()]
    sub = args[0].upper()
    wanted = [COMMANDS.get(a.upper()) for a in args[1:]]
    if sub == b"COUNT":
        return len(COMMANDS)
    if sub == b"LIST":
        return [spec.name.encode() for spec in COMMANDS.values()]
    if sub == b"INFO":
        if not args[1:]:
            return [_command_info(spec) for spec in COMMANDS.values()]
        return [None if spec is None else _command_info(spec) for spec in wanted]
    if sub == b"DOCS":
        specs = COMMANDS.values() if not args[1:] else [s for s in wanted if s is not None]
        docs: dict = {}
        for spec in specs:
            docs[spec.name.encode()] = _command_docs(spec)
        return docs
    return Error(f"ERR unknown subcommand '{args[0].decode('utf-8', 'replace')}'. "
                 "Try COMMAND HELP.")


# --- INFO -------------------------------------------------------------------------------------


def _info(node: Node, state: ConnectionState, args: list[bytes]) -> object:
    wanted = {a.decode("utf-8", "replace").lower() for a in args}
    if not wanted or wanted & {"all", "everything", "default"}:
        sections = INFO_SECTIONS
    else:
        sections = tuple(s for s in INFO_SECTIONS if s in wanted)
    blocks = []
    for section in sections:
        fields = _INFO_BUILDERS[section](node)
        blocks.append(f"# {section.capitalize()}\r\n"
                      + "".join(f"{k}:{v}\r\n" for k, v in fields))
    return "\r\n".join(blocks).encode()


def _info_server(node: Node) -> list[tuple[str, object]]:
    uptime = int(time.monotonic() - node.started_monotonic)
    return [("redis_version", REDIS_VERSION), ("chorusdb_version", node.version),
            ("redis_mode", "standalone"), ("os", f"{platform.system()} {platform.release()}"),
            ("arch_bits", 64), ("process_id", os.getpid()), ("run_id", node.run_id),
            ("tcp_port", node.config.client.port), ("uptime_in_seconds", uptime),
            ("uptime_in_days", uptime // 86400), ("chorus_node_id", node.config.node_id),
            ("chorus_mode", node.config.mode)]


def _info_clients(node: Node) -> list[tuple[str, object]]:
    return [("connected_clients", len(node.clients)), ("maxclients", node.config.clients_max),
            ("blocked_clients", 0)]


def _info_memory(node: Node) -> list[tuple[str, object]]:
    used = node.resident_bytes()
    return [("used_memory", used), ("used_memory_human", f"{used / 1048576:.2f}M"),
            ("maxmemory", 0), ("maxmemory_policy", "noeviction")]


def _info_persistence(node: Node) -> list[tuple[str, object]]:
    metrics = node.metrics
    return [("loading", 0), ("async_loading", 0), ("rdb_bgsave_in_progress", 0),
            ("aof_enabled", 0), ("chorus_durability", node.config.durability),
            ("chorus_transactions", metrics.transactions), ("chorus_fsyncs", metrics.fsyncs)]


def _info_replication(node: Node) -> list[tuple[str, object]]:
    """Redis's fields first (redis-py, redis-cli and monitoring tools parse them), then ours,
    prefixed ``chorus_``. ``offset`` and ``*_repl_offset`` are log indexes, not byte offsets."""
    status = node.core.status()
    if node.is_writable_role():
        fields = _info_replication_leader(node, status)
    else:
        fields = _info_replication_follower(node, status)
    fields += [("master_replid", replication_id(node.config.cluster_id, status["epoch"])),
               ("master_repl_offset", status["position"]["index"]),
               ("chorus_role", status["role"]), ("chorus_epoch", status["epoch"]),
               ("chorus_leader_id", status["leader_id"] or ""),
               ("chorus_write_quorum", status.get("write_quorum", 1)),
               ("chorus_commit_index", status["commit_position"]["index"]),
               ("chorus_applied_index", _applied_index(status))]
    if "log" in status:
        log = status["log"]
        fields += [("chorus_log_first_index", log["first_index"]),
                   ("chorus_log_entries", log["entries"]), ("chorus_log_bytes", log["bytes"])]
    fields += _info_failover(status)
    for number, member in enumerate(status["members"]):
        fields.append((f"chorus_follower{number}", _follower_line(member)))
    return fields


# The keys of ``status()["elections"]``, and the plain numbers of a leader-mode status shown
# as ``chorus_<key>`` in INFO replication.
ELECTION_OUTCOMES = ("started", "won", "lost")
FAILOVER_NUMBERS = ("leaderless_ms", "divergent_entries", "divergent_total", "priority")


def _info_failover(status: dict) -> list[tuple[str, object]]:
    """Elections, time without a leader, divergent entries and a running switchover: each
    field only when the mode reports the fact (a standalone node holds no elections)."""
    elections = status.get("elections")
    fields: list[tuple[str, object]] = [] if elections is None else [
        (f"chorus_elections_{outcome}", elections[outcome]) for outcome in ELECTION_OUTCOMES]
    fields += [(f"chorus_{key}", status[key]) for key in FAILOVER_NUMBERS if key in status]
    if "last_failover_ms" in status:
        last = status["last_failover_ms"]
        fields.append(("chorus_last_failover_ms", -1 if last is None else last))
    if "candidate" in status:
        fields.append(("chorus_candidate", int(status["candidate"])))
    switchover = status.get("switchover")
    if switchover is not None:
        state = switchover["state"].replace(" ", "_")      # INFO values have no spaces
        fields.append(("chorus_switchover", f"target={switchover['target']},state={state},"
                                            f"elapsed_ms={switchover['elapsed_ms']}"))
    return fields


def _info_replication_leader(node: Node, status: dict) -> list[tuple[str, object]]:
    """``slaveN`` lines for the connected followers; ``lag`` is, as in Redis, the seconds
    since the follower last answered (its delay in entries is in ``chorus_followerN``)."""
    connected = _followers(node, status, tuple(REDIS_REPLICA_STATES))
    fields: list[tuple[str, object]] = [("role", "master"), ("connected_slaves", len(connected))]
    for number, (host, port, member) in enumerate(connected):
        answered_ms_ago = member["last_answer_ms_ago"]
        lag_s = -1 if answered_ms_ago is None else answered_ms_ago // 1000
        fields.append((f"slave{number}",
                       f"ip={host},port={port},state={REDIS_REPLICA_STATES[member['state']]},"
                       f"offset={member['durable_position']['index']},lag={lag_s}"))
    return fields


def _info_replication_follower(node: Node, status: dict) -> list[tuple[str, object]]:
    host, port = _leader_address(node)
    contact_ms_ago = status.get("leader_contact_ms_ago")
    contact_s = -1 if contact_ms_ago is None else contact_ms_ago // 1000
    link_up = _link_is_up(node, status)
    fields: list[tuple[str, object]] = [
        ("role", "slave"), ("master_host", host), ("master_port", port),
        ("master_link_status", "up" if link_up else "down"),
        ("master_last_io_seconds_ago", contact_s),
        ("master_sync_in_progress", int(bool(status.get("snapshot_receiving"))))]
    if not link_up:
        fields.append(("master_link_down_since_seconds", contact_s))
    # Writes sent here are refused (redirect) or carried to the leader (forward).
    read_only = int(status.get("follower_writes") == "redirect")
    fields += [("slave_repl_offset", _applied_index(status)), ("slave_read_only", read_only),
               ("connected_slaves", 0),
               ("chorus_follower_writes", status.get("follower_writes", "")),
               ("chorus_snapshot_receiving", status.get("snapshot_receiving") or "")]
    return fields


def _follower_line(member: dict) -> str:
    """One follower as the leader sees it, in INFO's ``key=value,...`` form (the re-seed
    reason is free text and stays in /status)."""
    answered_ms_ago = member["last_answer_ms_ago"]
    return (f"id={member['id']},state={member['state']},"
            f"durable_index={member['durable_position']['index']},"
            f"applied_index={member['applied_position']['index']},"
            f"lag_entries={member['lag_entries']},lag_ms={member['lag_ms']},"
            f"last_answer_ms_ago={-1 if answered_ms_ago is None else answered_ms_ago},"
            f"reseeds={member['reseeds']}")


def _info_keyspace(node: Node) -> list[tuple[str, object]]:
    keys, expires = node.keyspace_counts()
    return [("db0", f"keys={keys},expires={expires},avg_ttl=0")] if keys else []


_INFO_BUILDERS = {"server": _info_server, "clients": _info_clients, "memory": _info_memory,
                  "persistence": _info_persistence, "replication": _info_replication,
                  "keyspace": _info_keyspace}

_HANDLERS = {b"PING": _ping, b"ECHO": _echo, b"AUTH": _auth, b"HELLO": _hello,
             b"SELECT": _select, b"INFO": _info, b"ROLE": _role, b"CLIENT": _client,
             b"COMMAND": _command, b"QUIT": _quit, b"RESET": _reset,
             b"CHORUS.TOPOLOGY": _topology, b"CHORUS.CONSISTENCY": _consistency}
assert _HANDLERS.keys() == CONNECTION_COMMAND_NAMES
