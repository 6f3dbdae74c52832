"""``chorusdb divergent``: list and resolve the writes a failover removed from nodes' logs.

When a new leader's log does not hold entries at the end of another member's log (a deposed
leader's unreplicated suffix, or a follower that had received it), that member removes them
from its log and keeps them in its ``divergent`` table (``core.model.DivergentEntry``): writes
that were never acknowledged, or — with W + Q <= N — acknowledged writes the failover lost.
Nothing resolves them on its own; an operator looks at each and decides:

- ``list [--all] [--nodes HOST:PORT,...]`` asks every node given (default: the local cluster of
  ``chorusdb up``) for its pending entries (``--all``: the resolved ones too) and prints one
  table: node, id, position epoch:index, the leader that wrote the entry, when it was removed
  (UTC) and by which leader's log, whether the removal was verified, the resolution and the
  entry as a command line. A node that cannot be asked gets a row saying so, the reason goes to
  stderr, and the exit code is 1.
- ``show ID --node HOST:PORT`` prints every field of one entry (ids are per node).
- ``reapply ID --node HOST:PORT`` runs the entry's command again as a new write and prints the
  write's reply.
- ``discard ID --node HOST:PORT --yes`` marks the entry discarded, recording who did it
  (``$USER@hostname``). Without ``--yes`` it refuses with exit code 2: the write is then given
  up for good (the entry stays on record).

Each speaks RESP to the nodes' client ports (``CHORUS.DIVERGENT``, described in
``core.commands``) through ``status.call_node``. Error replies are printed as the node sent
them, with what to do next.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chorusdb import limits
from chorusdb.cli.status import (
    NodeRefused,
    NodeUnreachable,
    add_password_argument,
    call_node,
    host_port,
    host_port_list,
    refusal_hint,
)
from chorusdb.cli.up import local_client_addresses

EXIT_USAGE = 2
COMMAND = "CHORUS.DIVERGENT"
UNREACHABLE_STEP = ("is the node running? ('chorusdb status' shows the cluster, 'chorusdb up' "
                    "starts a local one)")
# REAPPLY answers once the write is acknowledged or times out on the node (its
# leader.write_timeout_ms, 2 s by default); this bounds a node that does not answer at all.
reapply_reply_timeout_s = 30.0


@dataclass(frozen=True, slots=True)
class DivergentItem:
    """One entry as ``CHORUS.DIVERGENT LIST`` and ``SHOW`` reply it: a flat array of
    alternating field names and values, these fields. ``resolution`` is ``""`` while pending."""

    id: int
    epoch: int
    index: int
    leader: str
    removed_at_ms: int
    removed_by: str
    verified: bool
    resolution: str
    resolved_by: str
    resolved_at_ms: int
    command: str

    @classmethod
    def from_reply(cls, reply: object) -> DivergentItem:
        """Parse one item; ``ValueError`` names what is missing or wrong."""
        if not isinstance(reply, list) or len(reply) % 2:
            raise ValueError(f"expected an array of field names and values, got {reply!r}")
        values = {_text(name): value for name, value in zip(reply[0::2], reply[1::2])}
        parsed: dict[str, object] = {}
        for item_field in dataclasses.fields(cls):
            if item_field.name not in values:
                raise ValueError(f"the entry has no field {item_field.name!r}")
            value = values[item_field.name]
            if item_field.type == "str":
                parsed[item_field.name] = _text(value)
            elif item_field.type == "bool":
                parsed[item_field.name] = bool(int(value))
            else:
                parsed[item_field.name] = int(value)
        return cls(**parsed)

    @property
    def status(self) -> str:
        return self.resolution or "pending"


@dataclass(frozen=True, slots=True)
class NodeEntries:
    """What one node answered to LIST: its entries, or why they are unknown (``problem``:
    ``"unreachable"`` or ``"error"``, the details having gone to stderr)."""

    address: str
    entries: tuple[DivergentItem, ...] = ()
    problem: str = ""


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def utc_time(ms: int) -> str:
    """A time in milliseconds since the epoch as UTC to the millisecond; ``-`` for 0 (not yet)."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def operator_name() -> str:
    """Who resolves an entry: ``$USER@hostname``."""
    return f"{os.environ.get('USER') or getpass.getuser()}@{socket.gethostname()}"


# --- the command line --------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("divergent", help="list and resolve writes a failover removed "
                                                "from nodes' logs")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the divergent entries of every node given")
    listing.add_argument("--all", action="store_true",
                         help="resolved entries too (default: pending ones only)")
    listing.add_argument("--nodes", type=host_port_list, default=local_client_addresses(),
                         help="client HOST:PORT of each node, separated by commas (default: "
                              f"the local cluster, {','.join(local_client_addresses())})")
    add_password_argument(listing)
    listing.set_defaults(func=run_list)
    for action, help_text, run in (
            ("show", "every field of one entry", run_show),
            ("reapply", "run an entry's command again as a new write", run_reapply),
            ("discard", "give an entry's write up for good (needs --yes)", run_discard)):
        q = actions.add_parser(action, help=help_text)
        q.add_argument("id", type=entry_id, help="the entry's id on that node (see list)")
        q.add_argument("--node", type=host_port, required=True,
                       help="client HOST:PORT of the node that holds the entry")
        if action == "discard":
            q.add_argument("--yes", action="store_true",
                           help="confirm: the write is given up for good")
        add_password_argument(q)
        q.set_defaults(func=run)


def entry_id(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an entry id (a number), got {text!r}")
    return int(text)


def fetch_entries(address: str, include_resolved: bool, password: str | None) -> NodeEntries:
    """One node's answer to LIST, reasons for a problem going to stderr."""
    try:
        reply = call_node(address, COMMAND, "LIST", "ALL" if include_resolved else "PENDING",
                          password=password)
        if not isinstance(reply, list):
            raise ValueError(f"expected an array of entries, got {reply!r}")
        return NodeEntries(address, tuple(map(DivergentItem.from_reply, reply)))
    except NodeUnreachable as e:
        _complain("list", f"{e}; {UNREACHABLE_STEP}")
        return NodeEntries(address, problem="unreachable")
    except NodeRefused as e:
        _complain("list", f"{address} answered: {e}; "
                          f"{refusal_hint(e, 'is it a leader-mode node of this version?')}")
        return NodeEntries(address, problem="error")
    except ValueError as e:
        _complain("list", f"{address} sent a reply this version cannot read: {e}")
        return NodeEntries(address, problem="error")


def list_table(results: list[NodeEntries], include_resolved: bool) -> Table:
    """One row per entry, in the order of the nodes given and then by id; one row per node
    whose entries are unknown."""
    table = Table(title="divergent entries" if include_resolved else "pending divergent entries",
                  box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for column in ("node", "id", "position", "leader", "removed at (UTC)", "removed by",
                   "verified", "resolution", "command"):
        table.add_column(column, overflow="fold")
    for result in results:
        if result.problem:
            table.add_row(result.address, result.problem, *["-"] * 7)
        for item in sorted(result.entries, key=lambda item: item.id):
            table.add_row(result.address, str(item.id), f"{item.epoch}:{item.index}",
                          item.leader or "?", utc_time(item.removed_at_ms), item.removed_by,
                          "yes" if item.verified else "no", item.status, Text(item.command))
    return table


def run_list(args: argparse.Namespace) -> int:
    results = [fetch_entries(address, args.all, args.password) for address in args.nodes]
    console = Console()
    if any(r.entries or r.problem for r in results):
        console.print(list_table(results, args.all))
    else:
        console.print(f"no {'' if args.all else 'pending '}divergent entries on "
                      f"{len(results)} node(s)")
    return 1 if any(r.problem for r in results) else 0


def entry_table(address: str, item: DivergentItem) -> Table:
    """Every field of one entry, one per row."""
    table = Table(title=f"divergent entry {item.id} on {address}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    verified = ("yes: the new leader's log holds another entry at this position" if item.verified
                else "no: removed by a snapshot install; the leader's history may hold it too")
    for name, value in (
            ("position", f"{item.epoch}:{item.index}"),
            ("written by leader", item.leader or "not known here"),
            ("removed at (UTC)", utc_time(item.removed_at_ms)),
            ("removed by the log of", item.removed_by),
            ("verified", verified),
            ("resolution", item.status),
            ("resolved by", item.resolved_by or "-"),
            ("resolved at (UTC)", utc_time(item.resolved_at_ms)),
            ("command", item.command)):
        table.add_row(name, Text(value))     # plain text: a command may hold [brackets]
    return table


def run_show(args: argparse.Namespace) -> int:
    reply = _ask(args, "show", "SHOW", str(args.id))
    if reply is None:
        return 1
    try:
        item = DivergentItem.from_reply(reply)
    except ValueError as e:
        _complain("show", f"{args.node} sent a reply this version cannot read: {e}")
        return 1
    console = Console()
    console.print(entry_table(args.node, item))
    if not item.resolution:
        console.print(f"reapply: chorusdb divergent reapply {item.id} --node {args.node}\n"
                      f"discard: chorusdb divergent discard {item.id} --node {args.node} --yes",
                      markup=False)
    return 0


def run_reapply(args: argparse.Namespace) -> int:
    reply = _ask(args, "reapply", "REAPPLY", str(args.id), timeout_s=reapply_reply_timeout_s)
    if reply is None:
        return 1
    print(f"entry {args.id} on {args.node} reapplied; the write answered: {describe(reply)}")
    return 0


def run_discard(args: argparse.Namespace) -> int:
    if not args.yes:
        print(f"chorusdb divergent discard: discarding entry {args.id} on {args.node} gives its "
              f"write up for good (the entry stays on record as discarded); look at it with "
              f"'chorusdb divergent show {args.id} --node {args.node}', then add --yes",
              file=sys.stderr)
        return EXIT_USAGE
    who = operator_name()
    if _ask(args, "discard", "DISCARD", str(args.id), who) is None:
        return 1
    print(f"entry {args.id} on {args.node} discarded by {who}")
    return 0


def _ask(args: argparse.Namespace, action: str, *words: str,
         timeout_s: float = limits.admin_request_timeout_s) -> object | None:
    """The node's reply to ``CHORUS.DIVERGENT words...``, or None once the problem and what
    to do about it are on stderr."""
    try:
        return call_node(args.node, COMMAND, *words, timeout_s=timeout_s,
                         password=args.password)
    except NodeUnreachable as e:
        _complain(action, f"{e}; {UNREACHABLE_STEP}")
    except NodeRefused as e:
        if e.code == "INDOUBT":
            step = ("the write may still have been applied: look at its key before you "
                    "reapply the entry again")
        else:
            step = refusal_hint(e, f"see the node's entries with 'chorusdb divergent list "
                                   f"--all --nodes {args.node}'")
        _complain(action, f"{args.node} answered: {e}; {step}")
    return None


def describe(reply: object) -> str:
    """A reply as redis-cli would show it, on one line."""
    if reply is None:
        return "(nil)"
    if isinstance(reply, int):
        return f"(integer) {reply}"
    if isinstance(reply, list):
        return "[" + ", ".join(map(describe, reply)) + "]"
    return _text(reply)


def _complain(action: str, message: str) -> None:
    print(f"chorusdb divergent {action}: {message}", file=sys.stderr)
