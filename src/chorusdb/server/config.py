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

[storage]
durability = "fsync"        # fsync: acknowledged means on disk | os: survives a process crash

[clients]
requirepass = ""            # non-empty: AUTH required
max = 10000                 # connected clients
idle_timeout_s = 0          # close idle clients after this many seconds; 0 = never
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from chorusdb import limits
from chorusdb.core.modes import CORES

DURABILITIES = ("fsync", "os")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``field`` is its dotted name."""

    def __init__(self, field_name: str, expected: str, got: object = None) -> None:
        shown = "" if got is None else f", got {got!r}"
        super().__init__(f"{field_name}: expected {expected}{shown}")
        self.field = field_name


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    peer: Address
    client: Address


@dataclass(frozen=True, slots=True)
class NodeConfig:
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
    extra: dict = field(default_factory=dict)

    @property
    def member_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.members)


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


KNOWN_SECTIONS = ("node", "listen", "cluster", "storage", "clients", "leader")


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
    peer = parse_address("listen.peer", listen.get("peer", f"{client.host}:0"))
    admin = parse_address("listen.admin", listen.get("admin"))

    cluster_id = _string(cluster, "cluster", "id", "chorus")
    mode = cluster.get("mode", "standalone")
    if mode not in CORES:
        raise ConfigError("cluster.mode", f"one of {', '.join(sorted(CORES))}", mode)
    secret = cluster.get("secret_file")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError("cluster.secret_file", "a file path", secret)
    members = _parse_members(cluster.get("members"), node_id, client, peer)
    if mode == "standalone" and len(members) != 1:
        raise ConfigError("cluster.members", "exactly one member (this node) in standalone mode",
                          len(members))

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
        secret_file=None if secret is None else base_dir / secret,
        members=members,
        durability=durability,
        requirepass=requirepass,
        clients_max=int(_number(clients, "clients", "max", limits.clients_max, 1, True)),
        client_idle_timeout_s=_number(clients, "clients", "idle_timeout_s",
                                      limits.client_idle_timeout_s_default, 0, False),
        extra={"leader": _table(doc, "leader")},
    )


def _parse_members(raw: object, node_id: str, client: Address, peer: Address) -> tuple[Member, ...]:
    if raw is None:
        return (Member(node_id, peer, client),)
    if not isinstance(raw, list) or not raw:
        raise ConfigError("cluster.members", "a non-empty array of tables", raw)
    members: list[Member] = []
    for i, item in enumerate(raw):
        where = f"cluster.members[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(where, "a table with id, peer and client", item)
        member_id = _string(item, where, "id")
        if any(m.id == member_id for m in members):
            raise ConfigError(f"{where}.id", "a member id used once", member_id)
        members.append(Member(member_id, parse_address(f"{where}.peer", item.get("peer")),
                              parse_address(f"{where}.client", item.get("client"))))
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
