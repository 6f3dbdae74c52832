"""``chorusdb status``: nodes' /status as readable tables, like ``patronictl list``.

``--admin`` takes one admin address or several separated by commas. For one node it prints a
field/value table; for several, one row per node (role, epoch, leader, positions, keys), so a
glance shows who leads and who is behind. Every node that reports followers (a leader) adds a
table of them: state, durable position, lag, when each last answered and how often it was
re-seeded from a snapshot, and why. The exit code is 1 when any node cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from rich import box
from rich.console import Console
from rich.table import Table

from chorusdb import limits


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("status", help="show nodes' status as tables")
    p.add_argument("--admin", default=["127.0.0.1:7201"], type=admin_addresses,
                   help="a node's admin HOST:PORT, or several separated by commas")
    p.add_argument("--json", action="store_true",
                   help="print the raw /status JSON (an object keyed by address for several)")
    p.set_defaults(func=run)


def admin_addresses(text: str) -> list[str]:
    """``--admin``: one or more HOST:PORT separated by commas, each once, in the order given."""
    addresses = list(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
    if not addresses or not all(":" in a for a in addresses):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT[,HOST:PORT...], got {text!r}")
    return addresses


def fetch_status(admin: str) -> dict:
    with urllib.request.urlopen(f"http://{admin}/status",
                                timeout=limits.admin_request_timeout_s) as response:
        return json.load(response)


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
        ("divergent entries", status["divergent_entries"]),
        ("keys", status.get("keys", "-")),
        ("connected clients", status.get("connected_clients", "-")),
        ("client address", status.get("client_address", "-")),
    ]
    for field, value in rows:
        table.add_row(field, str(value))
    return table


def members_table(status: dict) -> Table | None:
    """The followers a leader streams to, or None when the node reports none."""
    if not status["members"]:
        return None
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
