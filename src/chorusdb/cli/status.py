"""``chorusdb status``: a node's /status as readable tables, like ``patronictl list``."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from rich.console import Console
from rich.table import Table

from chorusdb import limits


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("status", help="show a node's status as a table")
    p.add_argument("--admin", default="127.0.0.1:7201", help="the node's admin HOST:PORT")
    p.add_argument("--json", action="store_true", help="print the raw /status JSON")
    p.set_defaults(func=run)


def fetch_status(admin: str) -> dict:
    with urllib.request.urlopen(f"http://{admin}/status",
                                timeout=limits.admin_request_timeout_s) as response:
        return json.load(response)


def _position(p: dict | None) -> str:
    return "-" if not p else f"{p['epoch']}:{p['index']}"


def run(args: argparse.Namespace) -> int:
    try:
        status = fetch_status(args.admin)
    except (urllib.error.URLError, OSError) as e:
        print(f"chorusdb status: cannot reach http://{args.admin}/status ({e}); is the node "
              "running? Start one with 'chorusdb up'.", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    console = Console()
    table = Table(title=f"node {status['node_id']} of cluster {status['cluster_id']}",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in (
        ("mode", status["mode"]),
        ("role", status["role"]),
        ("epoch", status["epoch"]),
        ("leader", status["leader_id"] or "none known"),
        ("position", _position(status["position"])),
        ("committed", _position(status["commit_position"])),
        ("durability", status.get("durability", "-")),
        ("write quorum", status["write_quorum"]),
        ("election quorum", status["election_quorum"]),
        ("may lose acknowledged writes", "yes" if status["may_lose_acknowledged_writes"] else "no"),
        ("divergent entries", status["divergent_entries"]),
        ("connected clients", status.get("connected_clients", "-")),
        ("client address", status.get("client_address", "-")),
    ):
        table.add_row(field, str(value))
    console.print(table)
    if status["members"]:
        members = Table(title="members seen from " + status["node_id"])
        for column in ("member", "state", "durable position", "lag entries", "lag ms"):
            members.add_column(column)
        for m in status["members"]:
            members.add_row(m["id"], m.get("state", "-"), _position(m.get("durable_position")),
                            str(m.get("lag_entries", "-")), str(m.get("lag_ms", "-")))
        console.print(members)
    return 0
