"""``chorusdb up``: a local cluster in one command, for trying ChorusDB out.

It writes one TOML file per node under the data directory, starts ``chorusdb serve`` for each as
a child process on 127.0.0.1, waits until each prints its ready line, shows the endpoints (a
redis-cli command line and the admin URL per node) and stops exactly those processes, by PID, on
Ctrl-C or when one of them dies. Until leader mode exists a cluster is one standalone node.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chorusdb.core.modes import CORES
from chorusdb.server.process import stop_process, wait_until_ready

EXIT_USAGE = 2
node_ready_timeout_s = 30.0
node_stop_timeout_s = 15.0
DEFAULT_BASE_PORT = 7001


@dataclass
class LocalNode:
    node_id: str
    config_path: Path
    process: subprocess.Popen
    client: str = ""
    admin: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("up", help="start a local cluster on 127.0.0.1 until Ctrl-C")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--mode", default="standalone", help=f"one of {', '.join(sorted(CORES))}")
    p.add_argument("--data-dir", default="chorus-data", type=Path,
                   help="where configs and data go (default ./chorus-data)")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                   help="client ports start here; peer ports at +100, admin at +200 "
                        "(0: any free ports)")
    p.add_argument("--durability", default="fsync", choices=("fsync", "os"))
    p.set_defaults(func=run)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def write_configs(data_dir: Path, count: int, mode: str, base_port: int,
                  durability: str) -> list[Path]:
    """One TOML file per node; returns their paths. Ports are checked free now."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = []
    for i in range(count):
        if base_port:
            trio = (base_port + i, base_port + 100 + i, base_port + 200 + i)
            if not all(port_is_free(p) for p in trio):
                raise SystemExit(f"chorusdb up: ports {trio} are in use; pass --base-port "
                                 "with other ports, or --base-port 0 for any free ones")
        else:
            trio = (free_port(), free_port(), free_port())
        ports.append(trio)
    members = "".join(
        f'\n[[cluster.members]]\nid = "n{i + 1}"\npeer = "127.0.0.1:{p[1]}"\n'
        f'client = "127.0.0.1:{p[0]}"\n' for i, p in enumerate(ports))
    paths = []
    for i, (client, peer, admin) in enumerate(ports):
        path = data_dir / f"n{i + 1}.toml"
        path.write_text(
            f'[node]\nid = "n{i + 1}"\ndata_dir = "n{i + 1}"\n\n'
            f'[listen]\nclient = "127.0.0.1:{client}"\npeer = "127.0.0.1:{peer}"\n'
            f'admin = "127.0.0.1:{admin}"\n\n'
            f'[cluster]\nid = "local"\nmode = "{mode}"\n{members}\n'
            f'[storage]\ndurability = "{durability}"\n')
        paths.append(path)
    return paths


def start_node(config_path: Path) -> LocalNode:
    process = subprocess.Popen(
        [sys.executable, "-m", "chorusdb", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    node = LocalNode(config_path.stem, config_path, process)
    fields = wait_until_ready(process, node_ready_timeout_s)
    if fields is not None:
        node.client, node.admin = fields["client"], fields["admin"]
        return node
    stop_node(node)
    raise SystemExit(f"chorusdb up: node {node.node_id} did not start; run "
                     f"'chorusdb serve --config {config_path}' to see why")


def stop_node(node: LocalNode) -> int:
    """SIGTERM the node's own PID, then SIGKILL it if it does not stop in time."""
    return stop_process(node.process, node_stop_timeout_s)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.mode not in CORES:
        print(f"chorusdb up: --mode: expected one of {', '.join(sorted(CORES))}, got "
              f"{args.mode!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.mode == "standalone" and args.nodes != 1:
        print("chorusdb up: --nodes: standalone mode runs exactly one node", file=sys.stderr)
        return EXIT_USAGE
    console = Console()
    # SIGTERM and SIGHUP stop the cluster the way Ctrl-C does: the finally block below stops
    # every node by its PID (they run in their own sessions, so no signal reaches them directly).
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    paths = write_configs(args.data_dir, args.nodes, args.mode, args.base_port, args.durability)
    nodes: list[LocalNode] = []
    try:
        for path in paths:
            nodes.append(start_node(path))
        table = Table(title=f"ChorusDB {args.mode} cluster ({len(nodes)} node"
                            f"{'s' if len(nodes) > 1 else ''}, data in {args.data_dir})")
        for column in ("node", "pid", "redis-cli", "admin"):
            table.add_column(column)
        for node in nodes:
            host, port = node.client.rsplit(":", 1)
            table.add_row(node.node_id, str(node.process.pid), f"redis-cli -h {host} -p {port}",
                          f"http://{node.admin}/")
        console.print(table)
        for node in nodes:
            host, port = node.client.rsplit(":", 1)
            print(f"{node.node_id}: redis-cli -h {host} -p {port}    admin http://{node.admin}/",
                  flush=True)
        console.print(f"status: chorusdb status --admin {nodes[0].admin}    stop: Ctrl-C")
        while all(node.process.poll() is None for node in nodes):
            time.sleep(0.5)
        dead = [n.node_id for n in nodes if n.process.poll() is not None]
        console.print(f"[red]node(s) {', '.join(dead)} exited; stopping the rest[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("stopping…")
        return 0
    finally:
        for node in nodes:
            stop_node(node)
        if nodes:
            console.print(f"stopped {len(nodes)} node(s); data kept in {args.data_dir}")
