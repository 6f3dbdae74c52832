"""Reply values the cores hand back and the wire layer serialises, and the error classes.

A reply value is plain Python wherever RESP has a plain counterpart, so the hot path builds no
wrapper objects: ``bytes`` is a bulk string, ``int`` an integer, ``None`` a null, ``list`` an
array, ``dict`` a map (RESP3; flattened to an array in RESP2), ``float`` a double and ``bool`` a
boolean (RESP3; an integer in RESP2). ``Simple`` and ``Error`` cover the rest.

Error classes (the first word of the error text) and what they promise:

- definite, nothing was applied: ``ERR``, ``WRONGTYPE``, ``NOAUTH``, ``WRONGPASS``,
  ``NOTLEADER`` (refused before any side effect), ``NOQUORUM`` (refused before proposing),
  ``TRYAGAIN`` (refused, retry later);
- unknown outcome, the write may or may not take effect: ``INDOUBT`` (appended, but not
  confirmed in time); a timeout or a lost connection is unknown too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Simple:
    """A RESP simple string (``+OK``)."""

    text: str


@dataclass(frozen=True, slots=True)
class Error:
    """A RESP error; ``text`` starts with its class, e.g. ``"WRONGTYPE Operation against ..."``."""

    text: str

    @property
    def error_class(self) -> str:
        return self.text.split(" ", 1)[0]


OK = Simple("OK")
PONG = Simple("PONG")

DEFINITE_ERROR_CLASSES = frozenset(
    {"ERR", "WRONGTYPE", "NOAUTH", "WRONGPASS", "NOTLEADER", "NOQUORUM", "TRYAGAIN", "NOPROTO"}
)
UNKNOWN_OUTCOME_ERROR_CLASSES = frozenset({"INDOUBT"})

# Redis's own texts, which clients and tests match on.
WRONGTYPE = Error("WRONGTYPE Operation against a key holding the wrong kind of value")
SYNTAX_ERROR = Error("ERR syntax error")
NOT_AN_INTEGER = Error("ERR value is not an integer or out of range")
INCR_OVERFLOW = Error("ERR increment or decrement would overflow")
NOT_A_FLOAT = Error("ERR value is not a valid float")


def wrong_arity(command_name: str) -> Error:
    return Error(f"ERR wrong number of arguments for '{command_name.lower()}' command")


def unknown_command(name: bytes, args: tuple[bytes, ...]) -> Error:
    shown = " ".join(f"'{a.decode('utf-8', 'replace')[:128]}'" for a in args[:8])
    return Error(
        f"ERR unknown command '{name.decode('utf-8', 'replace')[:128]}', with args beginning with: "
        + (shown + " " if shown else "")
    )
