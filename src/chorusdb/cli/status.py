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
    table = Table(title=f"cluster {status['cluster_id']} ({status['mode']})")
    for column in ("node", "role", "epoch", "leader", "position", "committed", "durability",
                   "clients", "may lose acked writes", "divergent"):
        table.add_column(column)
    table.add_row(status["node_id"], status["role"], str(status["epoch"]),
                  str(status["leader_id"]), _position(status["position"]),
                  _position(status["commit_position"]), status.get("durability", "-"),
                  str(status.get("connected_clients", "-")),
                  "yes" if status["may_lose_acknowledged_writes"] else "no",
                  str(status["divergent_entries"]))
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
