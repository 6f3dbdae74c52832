"""``chorusdb status``: nodes' /status as readable tables, like ``patronictl list``.

``--admin`` takes one admin address or several separated by commas. For one node it prints a
field/value table; for several, one row per node (role, epoch, leader, positions, keys), so a
glance shows who leads and who is behind. In leader mode the one-node table adds the failover
facts: elections started, won and lost, how long the node has been without a leader, how long
the last failover took, divergent entries pending and in all, and a running switchover. Every
node that reports followers (a leader) adds a table of them: state, durable position, lag,
when each last answered and how often it was re-seeded from a snapshot, and why. The exit code
is 1 when any node cannot be reached.

This module is also how the command line reaches a node: ``fetch_status`` over the admin
HTTP API, ``call_node`` over RESP with redis-py on its client port (``chorusdb divergent`` and
``chorusdb switchover``). ``call_node`` never retries — a retried ``CHORUS.SWITCHOVER`` or
``DISCARD`` could act twice — and turns redis-py's exceptions into two of its own: an error
reply (``NodeRefused``, with the reply's text as the node sent it) and a node that could not be
asked (``NodeUnreachable``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

from rich import box
from rich.console import Console
from rich.table import Table

from chorusdb import limits


class NodeRefused(Exception):
    """A node answered a command with an error reply; ``code`` is its first word (``ERR``,
    ``TRYAGAIN``, ``NOTLEADER``, ...) and the message is the whole reply."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.code = text.split(" ", 1)[0]


class NodeUnreachable(Exception):
    """A node could not be asked: nothing listens, or no answer came in time."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("status", help="show nodes' status as tables")
    p.add_argument("--admin", default=["127.0.0.1:7201"], type=host_port_list,
                   help="a node's admin HOST:PORT, or several separated by commas")
    p.add_argument("--json", action="store_true",
                   help="print the raw /status JSON (an object keyed by address for several)")
    p.set_defaults(func=run)


def host_port_list(text: str) -> list[str]:
    """An argparse type: one or more HOST:PORT separated by commas, each once, in the order
    given."""
    addresses = list(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
    if not addresses or not all(_is_host_port(a) for a in addresses):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT[,HOST:PORT...], got {text!r}")
    return addresses


def host_port(text: str) -> str:
    """An argparse type: exactly one HOST:PORT."""
    if not _is_host_port(text.strip()):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text.strip()


def _is_host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and int(port) <= 65535


def add_password_argument(parser: argparse.ArgumentParser) -> None:
    """``--password`` for commands that speak RESP to the nodes, as redis-cli takes it."""
    parser.add_argument("--password", default=os.environ.get("REDISCLI_AUTH"),
                        help="the nodes' clients.requirepass (default: $REDISCLI_AUTH)")


def refusal_hint(error: NodeRefused, otherwise: str) -> str:
    """What to do after an error reply: give the password after an authentication error, else
    ``otherwise``."""
    if error.code in ("NOAUTH", "WRONGPASS"):
        return "pass the nodes' clients.requirepass with --password (or $REDISCLI_AUTH)"
    return otherwise


def fetch_status(admin: str) -> dict:
    with urllib.request.urlopen(f"http://{admin}/status",
                                timeout=limits.admin_request_timeout_s) as response:
        return json.load(response)


def call_node(address: str, *words: str, timeout_s: float = limits.admin_request_timeout_s,
              password: str | None = None) -> object:
    """Send one command to the node whose client port is at ``address`` and return its reply
    as redis-py gives it (bulk strings as bytes, INFO as a dict); ``NodeRefused`` for an error
    reply, ``NodeUnreachable`` when the node cannot be asked within ``timeout_s``."""
    # Imported here: redis-py takes longer to import than the rest of the command line, and
    # every chorusdb command (serve included) loads this module.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    host, _, port = address.rpartition(":")
    # RESP2, the shapes CHORUS.* commands document (redis-py may default to RESP3).
    client = redis.Redis(host=host.strip("[]"), port=int(port), password=password, protocol=2,
                         socket_timeout=timeout_s,
                         socket_connect_timeout=limits.admin_request_timeout_s,
                         retry=Retry(NoBackoff(), 0))
    try:
        return client.execute_command(*words)
    # NOAUTH and WRONGPASS are error replies, though redis-py files them under connection errors.
    except (redis.ResponseError, redis.AuthenticationError) as e:
        raise NodeRefused(" ".join(filter(None, (e.status_code, str(e))))) from None
    except redis.TimeoutError:
        raise NodeUnreachable(f"no answer from {address} within {timeout_s:g} s") from None
    except (redis.ConnectionError, OSError) as e:
        raise NodeUnreachable(f"cannot reach {address} ({e})") from None
    finally:
        client.close()


def _position(p: dict | None) -> str:
    return "-" if not p else f"{p['epoch']}:{p['index']}"


def node_table(status: dict) -> Table:
    """One node's facts, one per row."""
    table = Table(title=f"node {status['node_id']} of cluster {status['cluster_id']}",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("mode", status["mode"]),
        ("role", status["role"]),
        ("epoch", status["epoch"]),
        ("leader", status["leader_id"] or "none known"),
        ("position", _position(status["position"])),
        ("committed", _position(status["commit_position"])),
    ]
    if "applied_position" in status:
        rows.append(("applied", _position(status["applied_position"])))
    if "vector" in status:
        counters = status["counters"]
        rows += [
            ("holds writes", ", ".join(f"{o}:{s}" for o, s in status["vector"].items()) or "none"),
            ("topology", f"{status['topology']}, pulls from {', '.join(status['pulls_from'])}"),
            ("taking writes", "yes" if status["taking_writes"] else
             "no: learning its own last write after a restart"),
            ("conflicts", f"{counters['conflicts']} applied, {counters['siblings_dropped']} "
                          f"siblings dropped"),
            ("tombstones pending", status["tombstones_pending"]),
        ]
    if "log" in status:
        log = status["log"]
        rows.append(("log", f"{log['entries']} entries from index {log['first_index']}, "
                            f"{log['bytes']} bytes"))
    if status.get("leader_contact_ms_ago") is not None:
        rows.append(("leader last heard", f"{status['leader_contact_ms_ago']} ms ago"))
    if status.get("snapshot_receiving"):
        rows.append(("receiving snapshot", f"chunk {status['snapshot_receiving']}"))
    rows += [
        ("durability", status.get("durability", "-")),
        ("write quorum", status["write_quorum"]),
        ("election quorum", status["election_quorum"]),
        ("may lose acknowledged writes", "yes" if status["may_lose_acknowledged_writes"] else "no"),
        *failover_rows(status),
        ("keys", status.get("keys", "-")),
        ("connected clients", status.get("connected_clients", "-")),
        ("client address", status.get("client_address", "-")),
    ]
    for field, value in rows:
        table.add_row(field, str(value))
    return table


def failover_rows(status: dict) -> list[tuple[str, object]]:
    """The failover facts of a /status document, as far as its mode reports them."""
    rows: list[tuple[str, object]] = []
    if "candidate" in status:
        rows.append(("candidate", f"{'yes' if status['candidate'] else 'no'}, priority "
                                  f"{status.get('priority', 0)}"))
    elections = status.get("elections")
    if elections is not None:
        rows.append(("elections", f"{elections['started']} started, {elections['won']} won, "
                                  f"{elections['lost']} lost"))
    if status.get("leaderless_ms"):
        rows.append(("without a leader", f"for {status['leaderless_ms']} ms"))
    if "last_failover_ms" in status:
        last = status["last_failover_ms"]
        rows.append(("last failover", "none yet" if last is None else f"took {last} ms"))
    switchover = status.get("switchover")
    if switchover is not None:
        rows.append(("switchover", f"to {switchover['target']}: {switchover['state']} for "
                                   f"{switchover['elapsed_ms']} ms"))
    pending = status["divergent_entries"]
    total = status.get("divergent_total")
    rows.append(("divergent entries", f"{pending} pending" if total is None
                 else f"{pending} pending of {total}"))
    return rows


def members_table(status: dict) -> Table | None:
    """The followers a leader streams to, or a multi-leader node's peers; None when the node
    reports none."""
    if not status["members"]:
        return None
    if "vector" in status:
        return peers_table(status)
    table = Table(title="followers of " + status["node_id"], box=box.SIMPLE_HEAD,
                  padding=(0, 1, 0, 0))
    for column in ("member", "state", "durable", "lag entries", "lag ms",
                   "last answer", "re-seeds"):
        table.add_column(column, overflow="fold")
    for m in status["members"]:
        state = m.get("state", "-")
        if m.get("snapshot_chunks"):
            state += f" (chunk {m['snapshot_chunks']})"
        if m.get("reason"):
            state += f" ({m['reason']})"
        answered = m.get("last_answer_ms_ago")
        reseeds = str(m.get("reseeds", "-"))
        if m.get("reseed_reason"):
            reseeds += f": {m['reseed_reason']}"
        table.add_row(m["id"], state, _position(m.get("durable_position")),
                      str(m.get("lag_entries", "-")), str(m.get("lag_ms", "-")),
                      "never" if answered is None else f"{answered} ms ago", reseeds)
    return table


def peers_table(status: dict) -> Table:
    """A multi-leader node's view of each peer: how far it pulled their log and they pulled
    ours, when it last heard from them, and how far their clock seems to be from ours."""
    table = Table(title="peers of " + status["node_id"], box=box.SIMPLE_HEAD,
                  padding=(0, 1, 0, 0))
    for column in ("member", "pulled from it", "entries behind", "last contact",
                   "pulled from us", "clock offset ms"):
        table.add_column(column, overflow="fold")
    for m in status["members"]:
        contact = m["last_contact_ms"]
        behind = str(m["entries_behind"]) + (" (compacted: needs a copy)" if m["compacted"]
                                             else "")
        table.add_row(m["id"], str(m["checkpoint"]), behind,
                      "never" if contact is None else f"{contact} ms ago",
                      str(m["pulled_from_us"]),
                      "-" if m["clock_offset_ms"] is None else str(m["clock_offset_ms"]))
    return table


def cluster_table(results: list[tuple[str, dict | None]]) -> Table:
    """One row per admin address; ``None`` for a node that could not be reached (its row
    names the address instead)."""
    table = Table(title="nodes", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for column in ("node", "role", "epoch", "leader", "position", "commit", "applied",
                   "keys"):
        table.add_column(column, overflow="fold")
    for admin, status in results:
        if status is None:
            table.add_row(admin, "unreachable", *["-"] * 6)
            continue
        table.add_row(status["node_id"], status["role"], str(status["epoch"]),
                      status["leader_id"] or "-", _position(status["position"]),
                      _position(status["commit_position"]),
                      _position(status.get("applied_position", status["position"])),
                      str(status.get("keys", "-")))
    return table


def render(console: Console, results: list[tuple[str, dict | None]]) -> None:
    """Print the tables for what was fetched: a node's facts alone, or a row per node."""
    reachable = [status for _, status in results if status is not None]
    if len(results) == 1 and reachable:
        console.print(node_table(reachable[0]))
    else:
        console.print(cluster_table(results))
    for status in reachable:
        members = members_table(status)
        if members is not None:
            console.print(members)


def run(args: argparse.Namespace) -> int:
    admins = args.admin
    results: list[tuple[str, dict | None]] = []
    for admin in admins:
        try:
            results.append((admin, fetch_status(admin)))
        except (urllib.error.URLError, OSError, ValueError) as e:
            print(f"chorusdb status: cannot reach http://{admin}/status ({e}); is the node "
                  "running? Start one with 'chorusdb up'.", file=sys.stderr)
            results.append((admin, None))
    unreachable = any(status is None for _, status in results)
    if len(results) == 1 and unreachable:
        return 1
    if args.json:
        documents = {admin: status for admin, status in results}
        print(json.dumps(documents[admins[0]] if len(admins) == 1 else documents, indent=2))
    else:
        render(Console(), results)
    return 1 if unreachable else 0
