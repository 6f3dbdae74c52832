"""The command table: every command ChorusDB answers, described the way Redis 7 describes it.

One ``CommandSpec`` per command holds two kinds of facts:

- what the node needs to route and run it: ``arity`` (Redis's convention: positive = exactly
  that many words including the name, negative = at least that many), the key positions
  (``first_key``, ``last_key``, ``step``, 1-based word indexes; ``last_key`` -1 means "to the
  last word") and ``category``, which says who executes it:

  | category     | executed by                                                          |
  |--------------|----------------------------------------------------------------------|
  | ``data-read``  | ``Keyspace.execute``; no effects                                     |
  | ``data-write`` | ``Keyspace.execute``; effects go into the replication log            |
  | ``connection`` | the server, per connection (PING, AUTH, HELLO, SELECT, CLIENT, ...)  |
  | ``server``     | the server or the core (INFO, ROLE, COMMAND, WAIT)                   |
  | ``chorus``     | the core (``CHORUS.*``)                                              |

- what clients are told about it: Redis's own ``flags``, ACL categories, command tips, key
  specs, and the documentation (summary, since, group, complexity, arguments) from which the
  server builds the replies of ``COMMAND``, ``COMMAND INFO``, ``COMMAND DOCS`` and
  ``COMMAND COUNT``. redis-cli builds its argument hints from ``COMMAND DOCS``, so the argument
  trees follow Redis's own ``src/commands/*.json`` (7.2): leaf arguments carry a
  ``display_text``, ``oneof`` and ``block`` arguments carry their children in ``value``.

Container commands (CLIENT, COMMAND) list the subcommands ChorusDB implements in
``subcommands``, named ``"client|setname"`` as Redis names them; ``find_subcommand`` looks one up.

The table is data, checked once at import (``_check_table``): the key positions agree with the
key specs, every name is lower case, every category is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from chorusdb import limits
from chorusdb.replies import Error, unknown_command, wrong_arity

CATEGORIES = frozenset({"data-read", "data-write", "connection", "server", "chorus"})
DATA_CATEGORIES = frozenset({"data-read", "data-write"})


@dataclass(frozen=True, slots=True)
class Argument:
    """One argument in a command's documentation (an entry of ``COMMAND DOCS``'s arguments).

    ``type`` is one of Redis's argument types: ``key``, ``string``, ``integer``, ``double``,
    ``pattern``, ``unix-time``, ``pure-token``, ``oneof`` or ``block``. ``display_text`` is
    what a hint shows for a leaf argument; ``value`` holds the children of ``oneof`` and
    ``block``; ``key_spec_index`` points into ``CommandSpec.key_specs`` for ``key`` arguments.
    """

    name: str
    type: str
    display_text: str = ""
    token: str = ""
    optional: bool = False
    multiple: bool = False
    multiple_token: bool = False
    value: tuple[Argument, ...] = ()
    key_spec_index: int = -1

    @property
    def flags(self) -> tuple[str, ...]:
        """Redis's argument flags, in Redis's order."""
        return tuple(
            name
            for name, present in (
                ("optional", self.optional),
                ("multiple", self.multiple),
                ("multiple_token", self.multiple_token),
            )
            if present
        )


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A Redis 7 key specification of the ``index`` / ``range`` kind (the only kind we need).

    Keys start at word ``begin_index``; ``last_key`` is relative to it (0: only that word,
    -1: up to the last word) and ``key_step`` is the distance between keys.
    """

    flags: tuple[str, ...]
    begin_index: int
    last_key: int
    key_step: int
    limit: int = 0


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command; see the module docstring for what each group of fields is for."""

    name: str
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    category: str
    summary: str
    since: str
    group: str
    complexity: str
    arguments: tuple[Argument, ...] = ()
    acl_categories: tuple[str, ...] = ()
    tips: tuple[str, ...] = ()
    key_specs: tuple[KeySpec, ...] = ()
    subcommands: tuple[CommandSpec, ...] = ()
    deprecated_since: str = ""
    replaced_by: str = ""

    @property
    def is_write(self) -> bool:
        return self.category == "data-write"

    @property
    def doc_flags(self) -> tuple[str, ...]:
        """Redis's ``doc_flags`` of ``COMMAND DOCS``."""
        return ("deprecated",) if self.deprecated_since else ()


def check_arity(spec: CommandSpec, argc: int) -> bool:
    """Whether ``argc`` words (the command name included) satisfy ``spec.arity``."""
    arity = spec.arity
    return argc == arity if arity > 0 else argc >= -arity


KEY_TOO_LONG = Error(f"ERR key is longer than {limits.key_bytes_max} bytes")


def resolve(name: bytes, args: tuple[bytes, ...]) -> CommandSpec | Error:
    """The spec of a command a client sent, or the error Redis would answer: unknown command,
    wrong number of arguments, or (ours) a key of a write longer than ``key_bytes_max``.
    Every core calls this first, so every mode refuses the same input the same way."""
    spec = COMMANDS.get(name)
    if spec is None:
        return unknown_command(name, args)
    if not check_arity(spec, len(args) + 1):
        return wrong_arity(spec.name)
    if spec.category == "data-write" and spec.first_key:
        for key in command_keys(spec, args):
            if len(key) > limits.key_bytes_max:
                return KEY_TOO_LONG
    return spec


def command_keys(spec: CommandSpec, args: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The key arguments of a command whose arity was checked (``COMMAND GETKEYS``).

    ``args`` excludes the command name, so word ``i`` of the command is ``args[i - 1]``.
    """
    if spec.first_key == 0:
        return ()
    last = spec.last_key if spec.last_key > 0 else len(args) + 1 + spec.last_key
    return args[spec.first_key - 1:last:spec.step]


def find_subcommand(spec: CommandSpec, name: bytes) -> CommandSpec | None:
    """The subcommand ``name`` (any case) of a container command, or None."""
    wanted = f"{spec.name}|{name.decode('latin-1').lower()}"
    for subcommand in spec.subcommands:
        if subcommand.name == wanted:
            return subcommand
    return None


# --- building blocks ---------------------------------------------------------------------------


def _key(name: str = "key", *, multiple: bool = False) -> Argument:
    return Argument(name, "key", display_text=name, multiple=multiple, key_spec_index=0)


def _leaf(name: str, type_: str, *, token: str = "", optional: bool = False,
          multiple: bool = False, display_text: str = "") -> Argument:
    return Argument(name, type_, display_text=display_text or name, token=token,
                    optional=optional, multiple=multiple)


def _token(name: str) -> Argument:
    return Argument(name.lower(), "pure-token", token=name)


def _oneof(name: str, *choices: Argument, optional: bool = True) -> Argument:
    return Argument(name, "oneof", optional=optional, value=choices)


def _range_keys(*flags: str, last_key: int = 0, key_step: int = 1) -> tuple[KeySpec, ...]:
    return (KeySpec(flags, 1, last_key, key_step),)


_STRING_READ = ("@read", "@string", "@fast")
_STRING_WRITE_FAST = ("@write", "@string", "@fast")
_STRING_WRITE_SLOW = ("@write", "@string", "@slow")
_KEYSPACE_READ_FAST = ("@keyspace", "@read", "@fast")
_KEYSPACE_WRITE_FAST = ("@keyspace", "@write", "@fast")
_LIST_WRITE_FAST = ("@write", "@list", "@fast")
_CONNECTION_FAST = ("@fast", "@connection")
_CONNECTION_SLOW = ("@slow", "@connection")
_ADMIN_SLOW = ("@admin", "@slow", "@dangerous")
_EXPIRE_CONDITION = _oneof("condition", _token("NX"), _token("XX"), _token("GT"), _token("LT"))
_O1 = "O(1)"


def _single_key(name: str, arity: int, flags: tuple[str, ...], category: str, summary: str,
                since: str, group: str, acl: tuple[str, ...], key_flags: tuple[str, ...],
                *arguments: Argument, complexity: str = _O1, tips: tuple[str, ...] = (),
                deprecated_since: str = "", replaced_by: str = "") -> CommandSpec:
    """A command whose only key is word 1 (most data commands)."""
    return CommandSpec(
        name, arity, flags, 1, 1, 1, category, summary, since, group, complexity,
        arguments=(_key(), *arguments), acl_categories=acl, tips=tips,
        key_specs=_range_keys(*key_flags), deprecated_since=deprecated_since,
        replaced_by=replaced_by,
    )


def _keyless(name: str, arity: int, flags: tuple[str, ...], category: str, summary: str,
             since: str, group: str, acl: tuple[str, ...], *arguments: Argument,
             complexity: str = _O1, tips: tuple[str, ...] = (),
             subcommands: tuple[CommandSpec, ...] = (), deprecated_since: str = "",
             replaced_by: str = "") -> CommandSpec:
    """A command without keys (connection and server commands, KEYS, SCAN, DBSIZE, FLUSHDB)."""
    return CommandSpec(
        name, arity, flags, 0, 0, 0, category, summary, since, group, complexity,
        arguments=arguments, acl_categories=acl, tips=tips, subcommands=subcommands,
        deprecated_since=deprecated_since, replaced_by=replaced_by,
    )


def _expire_command(name: str, unit_argument: Argument, summary: str, since: str) -> CommandSpec:
    return _single_key(name, -3, ("write", "fast"), "data-write", summary, since, "generic",
                       _KEYSPACE_WRITE_FAST, ("RW", "UPDATE"), unit_argument, _EXPIRE_CONDITION)


# --- the table ---------------------------------------------------------------------------------

_CONNECTION_SUBCOMMAND_FLAGS = ("noscript", "loading", "stale")

_CLIENT_SUBCOMMANDS = (
    _keyless("client|id", 2, _CONNECTION_SUBCOMMAND_FLAGS, "connection",
             "Returns the unique client ID of the connection.", "5.0.0", "connection",
             _CONNECTION_SLOW),
    _keyless("client|getname", 2, _CONNECTION_SUBCOMMAND_FLAGS, "connection",
             "Returns the name of the connection.", "2.6.9", "connection", _CONNECTION_SLOW),
    _keyless("client|setname", 3, _CONNECTION_SUBCOMMAND_FLAGS, "connection",
             "Sets the connection name.", "2.6.9", "connection", _CONNECTION_SLOW,
             _leaf("connection-name", "string")),
    _keyless("client|info", 2, _CONNECTION_SUBCOMMAND_FLAGS, "connection",
             "Returns information about the connection.", "6.2.0", "connection",
             _CONNECTION_SLOW, tips=("nondeterministic_output",)),
    _keyless("client|list", -2, ("admin", *_CONNECTION_SUBCOMMAND_FLAGS), "connection",
             "Lists open connections.", "2.4.0", "connection",
             ("@admin", "@slow", "@dangerous", "@connection"),
             Argument("client-type", "oneof", token="TYPE", optional=True, value=(
                 _token("NORMAL"), _token("MASTER"), _token("REPLICA"), _token("PUBSUB"))),
             _leaf("client-id", "integer", token="ID", optional=True, multiple=True),
             complexity="O(N) where N is the number of client connections",
             tips=("nondeterministic_output",)),
    _keyless("client|setinfo", 4, _CONNECTION_SUBCOMMAND_FLAGS, "connection",
             "Sets information specific to the client or connection.", "7.2.0", "connection",
             _CONNECTION_SLOW,
             _oneof("attr", _leaf("libname", "string", token="LIB-NAME"),
                    _leaf("libver", "string", token="LIB-VER"), optional=False)),
)

_COMMAND_SUBCOMMANDS = (
    _keyless("command|count", 2, ("loading", "stale"), "server",
             "Returns a count of commands.", "2.8.13", "server", _CONNECTION_SLOW),
    _keyless("command|docs", -2, ("loading", "stale"), "server",
             "Returns documentary information about one, multiple or all commands.", "7.0.0",
             "server", _CONNECTION_SLOW,
             _leaf("command-name", "string", optional=True, multiple=True),
             complexity="O(N) where N is the number of commands to look up",
             tips=("nondeterministic_output_order",)),
    _keyless("command|info", -2, ("loading", "stale"), "server",
             "Returns information about one, multiple or all commands.", "2.8.13", "server",
             _CONNECTION_SLOW, _leaf("command-name", "string", optional=True, multiple=True),
             complexity="O(N) where N is the number of commands to look up",
             tips=("nondeterministic_output_order",)),
    _keyless("command|list", -2, ("loading", "stale"), "server",
             "Returns a list of command names.", "7.0.0", "server", _CONNECTION_SLOW,
             Argument("filterby", "oneof", token="FILTERBY", optional=True, value=(
                 _leaf("module-name", "string", token="MODULE"),
                 _leaf("category", "string", token="ACLCAT"),
                 _leaf("pattern", "pattern", token="PATTERN"))),
             complexity="O(N) where N is the total number of Redis commands",
             tips=("nondeterministic_output_order",)),
)

_SPECS: tuple[CommandSpec, ...] = (
    # --- strings ---
    _single_key("get", 2, ("readonly", "fast"), "data-read", "Returns the string value of a key.",
                "1.0.0", "string", _STRING_READ, ("RO", "ACCESS")),
    _single_key("set", -3, ("write", "denyoom"), "data-write",
                "Sets the string value of a key, ignoring its type. The key is created if it "
                "doesn't exist.", "1.0.0", "string", _STRING_WRITE_SLOW,
                ("RW", "ACCESS", "UPDATE", "VARIABLE_FLAGS"),
                _leaf("value", "string"),
                _oneof("condition", _token("NX"), _token("XX")),
                Argument("get", "pure-token", token="GET", optional=True),
                _oneof("expiration",
                       _leaf("seconds", "integer", token="EX"),
                       _leaf("milliseconds", "integer", token="PX"),
                       _leaf("unix-time-seconds", "unix-time", token="EXAT"),
                       _leaf("unix-time-milliseconds", "unix-time", token="PXAT"),
                       _token("KEEPTTL"))),
    _single_key("setnx", 3, ("write", "denyoom", "fast"), "data-write",
                "Set the string value of a key only when the key doesn't exist.", "1.0.0",
                "string", _STRING_WRITE_FAST, ("OW", "INSERT"), _leaf("value", "string"),
                deprecated_since="2.6.12", replaced_by="`SET` with the `NX` argument"),
    _single_key("setex", 4, ("write", "denyoom"), "data-write",
                "Sets the string value and expiration time of a key. Creates the key if it "
                "doesn't exist.", "2.0.0", "string", _STRING_WRITE_SLOW, ("OW", "UPDATE"),
                _leaf("seconds", "integer"), _leaf("value", "string"),
                deprecated_since="2.6.12", replaced_by="`SET` with the `EX` argument"),
    _single_key("psetex", 4, ("write", "denyoom"), "data-write",
                "Sets both string value and expiration time in milliseconds of a key. The key "
                "is created if it doesn't exist.", "2.6.0", "string", _STRING_WRITE_SLOW,
                ("OW", "UPDATE"), _leaf("milliseconds", "integer"), _leaf("value", "string"),
                deprecated_since="2.6.12", replaced_by="`SET` with the `PX` argument"),
    _single_key("getset", 3, ("write", "denyoom", "fast"), "data-write",
                "Returns the previous string value of a key after setting it to a new value.",
                "1.0.0", "string", _STRING_WRITE_FAST, ("RW", "ACCESS", "UPDATE"),
                _leaf("value", "string"),
                deprecated_since="6.2.0", replaced_by="`SET` with the `!GET` argument"),
    _single_key("getdel", 2, ("write", "fast"), "data-write",
                "Returns the string value of a key after deleting the key.", "6.2.0", "string",
                _STRING_WRITE_FAST, ("RW", "ACCESS", "DELETE")),
    CommandSpec("mget", -2, ("readonly", "fast"), 1, -1, 1, "data-read",
                "Atomically returns the string values of one or more keys.", "1.0.0", "string",
                "O(N) where N is the number of keys to retrieve.",
                arguments=(_key(multiple=True),), acl_categories=_STRING_READ,
                tips=("request_policy:multi_shard",),
                key_specs=_range_keys("RO", "ACCESS", last_key=-1)),
    CommandSpec("mset", -3, ("write", "denyoom"), 1, -1, 2, "data-write",
                "Atomically creates or modifies the string values of one or more keys.",
                "1.0.1", "string", "O(N) where N is the number of keys to set.",
                arguments=(Argument("data", "block", multiple=True,
                                    value=(_key(), _leaf("value", "string"))),),
                acl_categories=_STRING_WRITE_SLOW,
                tips=("request_policy:multi_shard", "response_policy:all_succeeded"),
                key_specs=_range_keys("OW", "UPDATE", last_key=-1, key_step=2)),
    _single_key("incr", 2, ("write", "denyoom", "fast"), "data-write",
                "Increments the integer value of a key by one. Uses 0 as initial value if the "
                "key doesn't exist.", "1.0.0", "string", _STRING_WRITE_FAST,
                ("RW", "ACCESS", "UPDATE")),
    _single_key("incrby", 3, ("write", "denyoom", "fast"), "data-write",
                "Increments the integer value of a key by a number. Uses 0 as initial value if "
                "the key doesn't exist.", "1.0.0", "string", _STRING_WRITE_FAST,
                ("RW", "ACCESS", "UPDATE"), _leaf("increment", "integer")),
    _single_key("decr", 2, ("write", "denyoom", "fast"), "data-write",
                "Decrements the integer value of a key by one. Uses 0 as initial value if the "
                "key doesn't exist.", "1.0.0", "string", _STRING_WRITE_FAST,
                ("RW", "ACCESS", "UPDATE")),
    _single_key("decrby", 3, ("write", "denyoom", "fast"), "data-write",
                "Decrements a number from the integer value of a key. Uses 0 as initial value "
                "if the key doesn't exist.", "1.0.0", "string", _STRING_WRITE_FAST,
                ("RW", "ACCESS", "UPDATE"), _leaf("decrement", "integer")),
    _single_key("append", 3, ("write", "denyoom", "fast"), "data-write",
                "Appends a string to the value of a key. Creates the key if it doesn't exist.",
                "2.0.0", "string", _STRING_WRITE_FAST, ("RW", "INSERT"),
                _leaf("value", "string"),
                complexity="O(1). The amortized time complexity is O(1) assuming the appended "
                           "value is small and the already present value is of any size, since "
                           "the dynamic string library used by Redis will double the free space "
                           "available on every reallocation."),
    _single_key("strlen", 2, ("readonly", "fast"), "data-read",
                "Returns the length of a string value.", "2.2.0", "string", _STRING_READ,
                ("RO",)),
    # --- generic (keyspace) ---
    CommandSpec("del", -2, ("write",), 1, -1, 1, "data-write", "Deletes one or more keys.",
                "1.0.0", "generic",
                "O(N) where N is the number of keys that will be removed. When a key to remove "
                "holds a value other than a string, the individual complexity for this key is "
                "O(M) where M is the number of elements in the list, set, sorted set or hash. "
                "Removing a single key that holds a string value is O(1).",
                arguments=(_key(multiple=True),),
                acl_categories=("@keyspace", "@write", "@slow"),
                tips=("request_policy:multi_shard", "response_policy:agg_sum"),
                key_specs=_range_keys("RM", "DELETE", last_key=-1)),
    CommandSpec("exists", -2, ("readonly", "fast"), 1, -1, 1, "data-read",
                "Determines whether one or more keys exist.", "1.0.0", "generic",
                "O(N) where N is the number of keys to check.",
                arguments=(_key(multiple=True),), acl_categories=_KEYSPACE_READ_FAST,
                tips=("request_policy:multi_shard", "response_policy:agg_sum"),
                key_specs=_range_keys("RO", last_key=-1)),
    _expire_command("expire", _leaf("seconds", "integer"),
                    "Sets the expiration time of a key in seconds.", "1.0.0"),
    _expire_command("pexpire", _leaf("milliseconds", "integer"),
                    "Sets the expiration time of a key in milliseconds.", "2.6.0"),
    _expire_command("expireat", _leaf("unix-time-seconds", "unix-time"),
                    "Sets the expiration time of a key to a Unix timestamp.", "1.2.0"),
    _expire_command("pexpireat", _leaf("unix-time-milliseconds", "unix-time"),
                    "Sets the expiration time of a key to a Unix milliseconds timestamp.",
                    "2.6.0"),
    _single_key("ttl", 2, ("readonly", "fast"), "data-read",
                "Returns the expiration time in seconds of a key.", "1.0.0", "generic",
                _KEYSPACE_READ_FAST, ("RO", "ACCESS"), tips=("nondeterministic_output",)),
    _single_key("pttl", 2, ("readonly", "fast"), "data-read",
                "Returns the expiration time in milliseconds of a key.", "2.6.0", "generic",
                _KEYSPACE_READ_FAST, ("RO", "ACCESS"), tips=("nondeterministic_output",)),
    _single_key("persist", 2, ("write", "fast"), "data-write",
                "Removes the expiration time of a key.", "2.2.0", "generic",
                _KEYSPACE_WRITE_FAST, ("RW", "UPDATE")),
    _single_key("type", 2, ("readonly", "fast"), "data-read",
                "Determines the type of value stored at a key.", "1.0.0", "generic",
                _KEYSPACE_READ_FAST, ("RO",)),
    _keyless("keys", 2, ("readonly",), "data-read", "Returns all key names that match a pattern.",
             "1.0.0", "generic", ("@keyspace", "@read", "@slow", "@dangerous"),
             _leaf("pattern", "pattern"),
             complexity="O(N) with N being the number of keys in the database, under the "
                        "assumption that the key names in the database and the given pattern "
                        "have limited length.",
             tips=("request_policy:all_shards", "nondeterministic_output_order")),
    _keyless("scan", -2, ("readonly",), "data-read",
             "Iterates over the key names in the database.", "2.8.0", "generic",
             ("@keyspace", "@read", "@slow"),
             _leaf("cursor", "integer"),
             _leaf("pattern", "pattern", token="MATCH", optional=True),
             _leaf("count", "integer", token="COUNT", optional=True),
             _leaf("type", "string", token="TYPE", optional=True),
             complexity="O(1) for every call. O(N) for a complete iteration, including enough "
                        "command calls for the cursor to return back to 0. N is the number of "
                        "elements inside the collection.",
             tips=("nondeterministic_output", "request_policy:special",
                   "response_policy:special")),
    _keyless("dbsize", 1, ("readonly", "fast"), "data-read",
             "Returns the number of keys in the database.", "1.0.0", "server",
             _KEYSPACE_READ_FAST,
             tips=("request_policy:all_shards", "response_policy:agg_sum")),
    _keyless("flushdb", -1, ("write",), "data-write",
             "Remove all keys from the current database.", "1.0.0", "server",
             ("@keyspace", "@write", "@slow", "@dangerous"),
             _oneof("flush-type", _token("ASYNC"), _token("SYNC")),
             complexity="O(N) where N is the number of keys in the selected database",
             tips=("request_policy:all_shards", "response_policy:all_succeeded")),
    # --- lists ---
    _single_key("rpush", -3, ("write", "denyoom", "fast"), "data-write",
                "Appends one or more elements to a list. Creates the key if it doesn't exist.",
                "1.0.0", "list", _LIST_WRITE_FAST, ("RW", "INSERT"),
                _leaf("element", "string", multiple=True),
                complexity="O(1) for each element added, so O(N) to add N elements when the "
                           "command is called with multiple arguments."),
    _single_key("lpush", -3, ("write", "denyoom", "fast"), "data-write",
                "Prepends one or more elements to a list. Creates the key if it doesn't exist.",
                "1.0.0", "list", _LIST_WRITE_FAST, ("RW", "INSERT"),
                _leaf("element", "string", multiple=True),
                complexity="O(1) for each element added, so O(N) to add N elements when the "
                           "command is called with multiple arguments."),
    _single_key("lrange", 4, ("readonly",), "data-read",
                "Returns a range of elements from a list.", "1.0.0", "list",
                ("@read", "@list", "@slow"), ("RO", "ACCESS"),
                _leaf("start", "integer"), _leaf("stop", "integer"),
                complexity="O(S+N) where S is the distance of start offset from HEAD for small "
                           "lists, from nearest end (HEAD or TAIL) for large lists; and N is "
                           "the number of elements in the specified range."),
    _single_key("llen", 2, ("readonly", "fast"), "data-read", "Returns the length of a list.",
                "1.0.0", "list", ("@read", "@list", "@fast"), ("RO",)),
    _single_key("lpop", -2, ("write", "fast"), "data-write",
                "Returns the first elements in a list after removing it. Deletes the list if "
                "the last element was popped.", "1.0.0", "list", _LIST_WRITE_FAST,
                ("RW", "ACCESS", "DELETE"), _leaf("count", "integer", optional=True),
                complexity="O(N) where N is the number of elements returned"),
    _single_key("rpop", -2, ("write", "fast"), "data-write",
                "Returns and removes the last elements of a list. Deletes the list if the last "
                "element was popped.", "1.0.0", "list", _LIST_WRITE_FAST,
                ("RW", "ACCESS", "DELETE"), _leaf("count", "integer", optional=True),
                complexity="O(N) where N is the number of elements returned"),
    # --- connection ---
    _keyless("ping", -1, ("fast",), "connection", "Returns the server's liveliness response.",
             "1.0.0", "connection", _CONNECTION_FAST,
             _leaf("message", "string", optional=True),
             tips=("request_policy:all_shards", "response_policy:all_succeeded")),
    _keyless("echo", 2, ("loading", "stale", "fast"), "connection", "Returns the given string.",
             "1.0.0", "connection", _CONNECTION_FAST, _leaf("message", "string")),
    _keyless("auth", -2, ("noscript", "loading", "stale", "fast", "no_auth", "allow_busy"),
             "connection", "Authenticates the connection.", "1.0.0", "connection",
             _CONNECTION_FAST,
             _leaf("username", "string", optional=True), _leaf("password", "string"),
             complexity="O(N) where N is the number of passwords defined for the user"),
    _keyless("hello", -1, ("noscript", "loading", "stale", "fast", "no_auth", "allow_busy"),
             "connection", "Handshakes with the Redis server.", "6.0.0", "connection",
             _CONNECTION_FAST,
             Argument("arguments", "block", optional=True, value=(
                 _leaf("protover", "integer"),
                 Argument("auth", "block", token="AUTH", optional=True, value=(
                     _leaf("username", "string"), _leaf("password", "string"))),
                 _leaf("clientname", "string", token="SETNAME", optional=True)))),
    _keyless("select", 2, ("loading", "stale", "fast"), "connection",
             "Changes the selected database.", "1.0.0", "connection", _CONNECTION_FAST,
             _leaf("index", "integer")),
    _keyless("quit", -1, ("allow_busy", "noscript", "loading", "stale", "fast", "no_auth"),
             "connection", "Closes the connection.", "1.0.0", "connection", _CONNECTION_FAST,
             deprecated_since="7.2.0", replaced_by="just closing the connection"),
    _keyless("reset", 1, ("noscript", "loading", "stale", "fast", "no_auth", "allow_busy"),
             "connection", "Resets the connection.", "6.2.0", "connection", _CONNECTION_FAST),
    _keyless("client", -2, (), "connection", "A container for client connection commands.",
             "2.4.0", "connection", ("@slow",), complexity="Depends on subcommand.",
             subcommands=_CLIENT_SUBCOMMANDS),
    # --- server ---
    _keyless("info", -1, ("loading", "stale"), "server",
             "Returns information and statistics about the server.", "1.0.0", "server",
             ("@slow", "@dangerous"), _leaf("section", "string", optional=True, multiple=True),
             tips=("nondeterministic_output", "request_policy:all_shards",
                   "response_policy:special")),
    _keyless("role", 1, ("noscript", "loading", "stale", "fast"), "server",
             "Returns the replication role.", "2.8.12", "server",
             ("@admin", "@fast", "@dangerous")),
    _keyless("command", -1, ("loading", "stale"), "server",
             "Returns detailed information about all commands.", "2.8.13", "server",
             _CONNECTION_SLOW, complexity="O(N) where N is the total number of Redis commands",
             tips=("nondeterministic_output_order",), subcommands=_COMMAND_SUBCOMMANDS),
    _keyless("wait", 3, ("noscript",), "server",
             "Blocks until the asynchronous replication of all preceding write commands sent "
             "by the connection is completed.", "3.0.0", "generic", _CONNECTION_SLOW,
             _leaf("numreplicas", "integer"), _leaf("timeout", "integer"),
             tips=("request_policy:all_shards", "response_policy:agg_min")),
    # --- ChorusDB ---
    _keyless("chorus.position", 1, ("loading", "stale", "fast"), "chorus",
             "Returns this node's replication log position as epoch:index.", "0.1.0", "server",
             _CONNECTION_FAST),
    _keyless("chorus.waitreplicas", 5, ("noscript",), "chorus",
             "Blocks until numreplicas followers hold the log position epoch:index durably, or "
             "the timeout (ms, 0: no timeout) passes; returns how many do. WAIT is this with "
             "the position of the connection's last write.", "0.1.0", "server",
             _CONNECTION_SLOW, _leaf("numreplicas", "integer"), _leaf("timeout", "integer"),
             _leaf("epoch", "integer"), _leaf("index", "integer")),
    _keyless("chorus.waitpos", -4, ("loading", "stale"), "chorus",
             "Blocks the connection until this node has applied the log position epoch:index "
             "and, when given, is at most MAXLAG entries behind the leader's commit and was "
             "caught up with it at most MAXSTALENESS ms ago; answers OK, or -TRYAGAIN after "
             "timeout_ms. Commands sent after it on the connection run once it has answered, "
             "so a pipelined read that follows it sees the position. It also sets how they "
             "read, as CHORUS.CONSISTENCY does: LINEARIZABLE (only the leader answers; another "
             "member refuses with -NOTLEADER), or without it from what the node applied.",
             "0.1.0", "server", _CONNECTION_SLOW, _leaf("epoch", "integer"),
             _leaf("index", "integer"), _leaf("timeout_ms", "integer"),
             _leaf("entries", "integer", token="MAXLAG", optional=True),
             _leaf("ms", "integer", token="MAXSTALENESS", optional=True),
             Argument("linearizable", "pure-token", token="LINEARIZABLE", optional=True)),
    _keyless("chorus.consistency", -1, ("loading", "stale", "fast"), "connection",
             "Sets how this connection's reads are served: linearizable (only the leader "
             "answers them, after confirming it still leads; another member refuses with "
             "-NOTLEADER) or stale (from what the node has applied: the default, so the leader "
             "is linearizable and a follower serves a consistent prefix). Without an argument, "
             "returns the current level.", "0.1.0", "connection", _CONNECTION_FAST,
             _oneof("level", _token("LINEARIZABLE"), _token("STALE"))),
    _keyless("chorus.token", 1, ("loading", "stale", "fast"), "chorus",
             "Returns the session token of the connection as epoch:index: the highest of this "
             "node's applied position and the position of the connection's last write, taken "
             "once every earlier command of the connection has been answered. A read answered "
             "before it saw no later state than the token names.", "0.1.0", "server",
             _CONNECTION_FAST),
    _keyless("chorus.topology", 1, ("loading", "stale", "fast"), "chorus",
             "Returns what this node knows of the cluster, as an array of field names and "
             "values: node, role, epoch, leader, applied, commit, lag_entries, staleness_ms "
             "and members (an array of [id, client address] pairs).", "0.1.0", "server",
             _CONNECTION_FAST),
    _keyless("chorus.once", -3, ("write", "denyoom"), "data-write",
             "Runs the data write command exactly once for request_id: the first time it runs "
             "and, if it changed anything, its reply is remembered with request_id in the same "
             "log entry as the write, for 10 minutes; a retry with the same request_id, on any "
             "node and after a failover too, answers the remembered reply and applies nothing. "
             "Use a random id per logical request and the same id on every retry of it.",
             "0.1.0", "server", ("@write", "@slow"), _leaf("request-id", "string"),
             _leaf("command", "string"), _leaf("arg", "string", optional=True, multiple=True),
             complexity="Depends on the command."),
    _keyless("chorus.digest", 1, ("loading", "stale"), "chorus",
             "Returns a SHA-256 digest of this node's live data: replicas holding the same data "
             "answer the same digest.", "0.1.0", "server", _CONNECTION_FAST),
    _keyless("chorus.divergent", -2, ("admin", "noscript", "loading", "stale"), "chorus",
             "Lists and resolves this node's divergent entries: writes a deposed leader or a "
             "follower removed from its log because the leader of a later epoch does not hold "
             "them. LIST [ALL|PENDING] returns the entries (default PENDING: not yet resolved), "
             "SHOW id one entry; each entry is an array of field names and values (id, epoch, "
             "index, leader, removed_at_ms, removed_by, verified, resolution, resolved_by, "
             "resolved_at_ms, command). REAPPLY id runs the entry's command again as a new "
             "write and returns its reply; DISCARD id who marks it discarded by who, keeping "
             "it on record.", "0.1.0", "server", _ADMIN_SLOW,
             _oneof("subcommand",
                    Argument("list", "block", token="LIST", value=(
                        _oneof("which", _token("ALL"), _token("PENDING")),)),
                    Argument("show", "block", token="SHOW", value=(_leaf("id", "integer"),)),
                    Argument("reapply", "block", token="REAPPLY",
                             value=(_leaf("id", "integer"),)),
                    Argument("discard", "block", token="DISCARD",
                             value=(_leaf("id", "integer"), _leaf("who", "string"))),
                    optional=False),
             complexity="O(N) where N is the number of entries listed; O(1) for the others."),
    _single_key("chorus.siblings", 2, ("readonly", "fast"), "chorus",
                "Multi-leader mode: returns the key's causal context (origin:seq pairs) and its "
                "concurrent versions, each as [dot, hybrid timestamp, value or nil for a "
                "delete]. Pass the context to CHORUS.SETCTX to replace exactly these versions.",
                "0.1.0", "server", ("@read", "@fast"), ("RO", "ACCESS")),
    _single_key("chorus.setctx", 4, ("denyoom",), "chorus",
                "Multi-leader mode: sets the key's value as a write that has seen the context "
                "(from CHORUS.SIBLINGS): it supersedes the versions the context covers and no "
                "others.", "0.1.0", "server", ("@write", "@slow"), ("RW", "UPDATE"),
                _leaf("context", "string"), _leaf("value", "string")),
    _keyless("chorus.conflicts", -1, ("readonly", "loading", "stale"), "chorus",
             "Multi-leader mode: lists the conflicts this node resolved most recently, newest "
             "first, each as [key, policy, the concurrent versions' dots, the winner's dot, "
             "when (ms)].", "0.1.0", "server", _CONNECTION_SLOW,
             _leaf("count", "integer", optional=True)),
    _keyless("chorus.switchover", -2, ("admin", "noscript", "stale"), "chorus",
             "Hands leadership to the member node: the leader lets node catch up with its log "
             "and tells it to run for election at once. Answers once node leads, or an error "
             "after timeout_ms (default: leader.switchover_timeout_ms).", "0.1.0", "server",
             _ADMIN_SLOW, _leaf("node", "string"), _leaf("timeout_ms", "integer", optional=True)),
)

COMMANDS: dict[bytes, CommandSpec] = {spec.name.upper().encode(): spec for spec in _SPECS}
"""Every top-level command, keyed by its upper-case name (the form ``ClientCommand`` carries)."""


MULTI_LEADER_COMMANDS = frozenset({b"CHORUS.SIBLINGS", b"CHORUS.SETCTX", b"CHORUS.CONFLICTS"})


def multi_leader_only(name: bytes) -> Error:
    """The reply of a mode without multi-leader versions to one of ``MULTI_LEADER_COMMANDS``."""
    return Error(f"ERR {name.decode()} needs cluster.mode = \"multi-leader\": in this mode a "
                 f"key has one value and no concurrent versions")


def _check_table() -> None:
    """Invariants of the table, checked once at import."""
    assert len(COMMANDS) == len(_SPECS), "duplicate command names"
    for spec in _SPECS:
        for checked in (spec, *spec.subcommands):
            assert checked.name == checked.name.lower(), checked.name
            assert checked.category in CATEGORIES, checked.name
            assert checked.arity != 0, checked.name
            assert not checked.key_specs or len(checked.key_specs) == 1, checked.name
            if checked.key_specs:
                key_spec = checked.key_specs[0]
                assert checked.first_key == key_spec.begin_index, checked.name
                assert checked.step == key_spec.key_step, checked.name
                if key_spec.last_key >= 0:
                    assert checked.last_key == key_spec.begin_index + key_spec.last_key
                else:
                    assert checked.last_key == key_spec.last_key, checked.name
            else:
                assert (checked.first_key, checked.last_key, checked.step) == (0, 0, 0)
            is_write_flagged = "write" in checked.flags
            assert is_write_flagged == (checked.category == "data-write"), checked.name
        for subcommand in spec.subcommands:
            assert subcommand.name.startswith(spec.name + "|"), subcommand.name


_check_table()
