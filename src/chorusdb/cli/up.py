"""``chorusdb up``: a local cluster in one command, for trying ChorusDB out.

By default it starts three nodes in leader mode on 127.0.0.1 with ``write_quorum`` 2 (a write
is acknowledged once the leader and one follower hold it); ``--nodes 1`` starts one standalone
node. Under the data directory it writes one TOML file per node (``n1.toml`` ...) and, for a
mode with peers, the cluster secret (``cluster.secret``, 32 random bytes from ``secrets`` in
base64, readable by its owner only), then starts ``chorusdb serve`` for each node as a child
process in its own session, its log going to ``n1.log`` ... beside its config. Every node is
launched before any is waited for, so they start side by side; once each has printed its ready
line (``server.process``) it waits until the cluster takes writes — in leader mode, until a node
reports itself leader with its commit position at its log end: the members elect the first
leader within about a second (the initial leader runs its election at once), and the new
leader's first entry is committed once a quorum follows it — then shows the members (role as
each node's ``/status`` reports it, PID, client and admin addresses), a ``redis-cli`` command
line per node, and in leader mode the commands that list divergent writes and hand leadership
over. Without further flags those commands talk to the nodes of this cluster at the default
ports (``local_client_addresses``).

It stops exactly the processes it started, by PID, on Ctrl-C, SIGTERM or SIGHUP, or when one of
them dies; the children are in their own sessions, so a signal meant for ``up`` never reaches
them directly, and a second signal while they stop is ignored rather than leave some running.

Running it again on the same data directory restarts the same cluster on its data: the configs
are rewritten (ports may change with ``--base-port 0``), the secret and the data stay. A data
directory that holds another cluster (another mode or other members) is refused, not mixed.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chorusdb.cli.status import fetch_status
from chorusdb.core.modes import CORES
from chorusdb.server.config import (
    LEADER,
    MAJORITY,
    STANDALONE,
    ConfigError,
    NodeConfig,
    load_config,
)
from chorusdb.server.process import free_ports, stop_process, wait_until_ready

EXIT_USAGE = 2
node_ready_timeout_s = 30.0
node_stop_timeout_s = 15.0
nodes_max = 9                       # a local try-out: every node is a Python process
cluster_ready_timeout_s = 10.0      # for a leader to be elected and commit its first entry
cluster_ready_poll_s = 0.1
log_tail_lines = 15                 # lines of a node's log shown when it fails to start
secret_random_bytes = 32
DEFAULT_NODES = 3
DEFAULT_BASE_PORT = 7001
PEER_PORT_OFFSET = 100
ADMIN_PORT_OFFSET = 200
HOST = "127.0.0.1"
CLUSTER_ID = "local"
SECRET_FILE_NAME = "cluster.secret"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WRITABLE_ROLES = (STANDALONE, "leader")


@dataclass
class LocalNode:
    node_id: str
    config_path: Path
    log_path: Path
    process: subprocess.Popen
    client: str = ""
    admin: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("up", help="start a local cluster on 127.0.0.1 until Ctrl-C")
    p.add_argument("--nodes", type=int, default=DEFAULT_NODES,
                   help=f"number of nodes, 1..{nodes_max} (default {DEFAULT_NODES}; "
                        "1 is a standalone node)")
    p.add_argument("--mode", help=f"one of {', '.join(sorted(CORES))} (default: {LEADER}, "
                                  f"{STANDALONE} for one node)")
    p.add_argument("--write-quorum", type=int,
                   help="leader mode: nodes, leader included, that hold a write before it is "
                        "acknowledged (default: a majority)")
    p.add_argument("--data-dir", default="chorus-data", type=Path,
                   help="where configs, logs and data go (default ./chorus-data)")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                   help=f"client ports start here; peer ports at +{PEER_PORT_OFFSET}, admin at "
                        f"+{ADMIN_PORT_OFFSET} (0: any free ports)")
    p.add_argument("--durability", default="fsync", choices=("fsync", "os"))
    p.set_defaults(func=run)


def local_client_addresses() -> list[str]:
    """The client addresses of the nodes ``chorusdb up`` starts with its default flags."""
    return [f"{HOST}:{DEFAULT_BASE_PORT + i}" for i in range(DEFAULT_NODES)]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def choose_ports(count: int, base_port: int) -> list[tuple[int, int, int]]:
    """(client, peer, admin) per node: from ``base_port`` on, checked free now, or any free
    ports when ``base_port`` is 0."""
    if not base_port:
        ports = free_ports(3 * count)
        return [tuple(ports[3 * i:3 * i + 3]) for i in range(count)]
    trios = [(base_port + i, base_port + PEER_PORT_OFFSET + i, base_port + ADMIN_PORT_OFFSET + i)
             for i in range(count)]
    busy = [p for trio in trios for p in trio if not port_is_free(p)]
    if busy:
        raise SystemExit(f"chorusdb up: ports {', '.join(map(str, busy))} are in use (another "
                         "'chorusdb up'?); pass --base-port with other ports, or --base-port 0 "
                         "for any free ones")
    return trios


def ensure_secret(data_dir: Path) -> Path:
    """The cluster secret file, created once (owner-only) and kept across runs."""
    path = data_dir / SECRET_FILE_NAME
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(secrets.token_bytes(secret_random_bytes)) + b"\n")
    return path


def write_configs(data_dir: Path, count: int, mode: str, base_port: int, durability: str,
                  write_quorum: int | None = None) -> list[Path]:
    """One TOML file per node (``n1.toml`` ...), plus the cluster secret for a mode with peers;
    returns the configs' paths. ``write_quorum`` None is a majority."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = choose_ports(count, base_port)
    cluster = f'[cluster]\nid = "{CLUSTER_ID}"\nmode = "{mode}"\n'
    leader = ""
    if mode != STANDALONE:
        cluster += f'secret_file = "{ensure_secret(data_dir).name}"\n'
    if mode == LEADER:
        quorum = write_quorum or f'"{MAJORITY}"'
        leader = f"\n[leader]\nwrite_quorum = {quorum}\n"
    members = "".join(
        f'\n[[cluster.members]]\nid = "n{i + 1}"\npeer = "{HOST}:{peer}"\n'
        f'client = "{HOST}:{client}"\n' for i, (client, peer, _) in enumerate(ports))
    paths = []
    for i, (client, peer, admin) in enumerate(ports):
        node_id = f"n{i + 1}"
        path = data_dir / f"{node_id}.toml"
        path.write_text(
            "# Written by 'chorusdb up', which rewrites it on every run.\n\n"
            f'[node]\nid = "{node_id}"\ndata_dir = "{node_id}"\n\n'
            f'[listen]\nclient = "{HOST}:{client}"\npeer = "{HOST}:{peer}"\n'
            f'admin = "{HOST}:{admin}"\n\n'
            f"{cluster}{members}{leader}\n"
            f'[storage]\ndurability = "{durability}"\n')
        paths.append(path)
    return paths


def refuse_another_cluster(data_dir: Path, mode: str, count: int) -> None:
    """Stop if ``data_dir`` holds the configs of a cluster other than the one asked for: nodes
    would recover another mode's data, or members would be missing from the data."""
    previous_path = data_dir / "n1.toml"
    if not previous_path.exists():
        return
    try:
        previous = load_config(previous_path)
    except ConfigError as e:
        raise SystemExit(f"chorusdb up: {previous_path}: {e}; fix or remove it, or pass another "
                         "--data-dir") from None
    if previous.mode != mode or len(previous.members) != count:
        raise SystemExit(
            f"chorusdb up: {data_dir} holds a {previous.mode} cluster of "
            f"{len(previous.members)} node(s); restart it with --nodes {len(previous.members)} "
            f"--mode {previous.mode}, or pass another --data-dir for a new cluster")


def launch_node(config_path: Path) -> LocalNode:
    """Start ``chorusdb serve`` for one config, its stderr (the log) going to a file beside it."""
    log_path = config_path.with_suffix(".log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "chorusdb", "serve", "--config", str(config_path)],
            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    return LocalNode(config_path.stem, config_path, log_path, process)


def await_ready(node: LocalNode) -> None:
    """Wait for the node's ready line; a node that does not start stops ``up`` with the end
    of its log."""
    fields = wait_until_ready(node.process, node_ready_timeout_s)
    if fields is not None:
        node.client, node.admin = fields["client"], fields["admin"]
        return
    tail = node.log_path.read_text(errors="replace").splitlines()[-log_tail_lines:]
    raise SystemExit(f"chorusdb up: node {node.node_id} did not start; the end of its log "
                     f"({node.log_path}):\n" + "\n".join(tail))


def stop_node(node: LocalNode) -> int:
    """SIGTERM the node's own PID, then SIGKILL it if it does not stop in time."""
    return stop_process(node.process, node_stop_timeout_s)


def status_of(node: LocalNode) -> dict:
    """The node's /status, or an empty dict if it does not answer."""
    try:
        return fetch_status(node.admin)
    except (urllib.error.URLError, OSError, ValueError):
        return {}


def is_writable(status: dict) -> bool:
    """The node leads (or stands alone) and its commit position has reached its log end: an
    elected leader's first entry is committed only once a write quorum holds it, so the first
    write is not refused for want of one."""
    return (status.get("role") in WRITABLE_ROLES
            and status["commit_position"]["index"] >= status["position"]["index"])


def wait_until_writable(nodes: list[LocalNode]) -> dict[str, dict]:
    """Each node's /status once one of them ``is_writable``, or as they are after
    ``cluster_ready_timeout_s``."""
    deadline = time.monotonic() + cluster_ready_timeout_s
    while True:
        statuses = {node.node_id: status_of(node) for node in nodes}
        if any(map(is_writable, statuses.values())) or time.monotonic() >= deadline:
            return statuses
        time.sleep(cluster_ready_poll_s)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags, or None."""
    if not 1 <= args.nodes <= nodes_max:
        return f"--nodes: expected 1..{nodes_max}, got {args.nodes}"
    if args.mode not in CORES:
        return f"--mode: expected one of {', '.join(sorted(CORES))}, got {args.mode!r}"
    if args.mode == STANDALONE and args.nodes != 1:
        return "--nodes: standalone mode runs exactly one node"
    if args.write_quorum is not None and args.mode != LEADER:
        return f"--write-quorum: only for --mode {LEADER}"
    if args.write_quorum is not None and not 1 <= args.write_quorum <= args.nodes:
        return f"--write-quorum: expected 1..{args.nodes} (the number of nodes), got " \
               f"{args.write_quorum}"
    highest_port = args.base_port + ADMIN_PORT_OFFSET + args.nodes - 1
    if args.base_port and not (1 <= args.base_port and highest_port <= 65535):
        return f"--base-port: expected 0, or 1..{65535 - ADMIN_PORT_OFFSET - args.nodes + 1}"
    return None


def show_cluster(console: Console, nodes: list[LocalNode], config: NodeConfig,
                 data_dir: Path) -> None:
    count = len(nodes)
    statuses = wait_until_writable(nodes)
    table = Table(title=f"ChorusDB {config.mode} cluster ({count} node{'s' if count > 1 else ''},"
                        f" data in {data_dir})")
    for column in ("node", "pid", "role", "client", "admin"):
        table.add_column(column)
    for node in nodes:
        table.add_row(node.node_id, str(node.process.pid),
                      statuses[node.node_id].get("role", "not answering"), node.client,
                      f"http://{node.admin}/")
    console.print(table)
    for node in nodes:
        host, port = node.client.rsplit(":", 1)
        print(f"{node.node_id}: redis-cli -h {host} -p {port}", flush=True)
    if config.mode == LEADER:
        held = "on disk" if config.durability == "fsync" else "in the OS (durability os)"
        console.print(f"a write is acknowledged once {config.write_quorum} of {count} nodes have "
                      f"it {held}")
        console.print(f"election quorum {config.election_quorum}; may lose acknowledged writes: "
                      f"{'yes' if config.may_lose_acknowledged_writes else 'no'}")
        show_failover_commands(console, nodes, statuses)
    console.print(f"status: chorusdb status --admin {nodes[0].admin}    logs: {data_dir}/n*.log")
    console.print("stop: Ctrl-C")


def show_failover_commands(console: Console, nodes: list[LocalNode],
                           statuses: dict[str, dict]) -> None:
    """The command lines that list divergent writes and hand leadership to a follower, with
    the nodes' addresses unless they are the defaults of those commands; never wrapped, so
    they can be copied."""
    clients = [node.client for node in nodes]
    at_defaults = clients == local_client_addresses()
    console.print("divergent writes: chorusdb divergent list"
                  + ("" if at_defaults else f" --nodes {','.join(clients)}"), soft_wrap=True)
    followers = [node.node_id for node in nodes if statuses[node.node_id].get("role") != "leader"]
    if followers:
        console.print(f"hand leadership over: chorusdb switchover --to {followers[-1]}"
                      + ("" if at_defaults else f" --node {','.join(clients)}"), soft_wrap=True)


def run(args: argparse.Namespace) -> int:
    if args.mode is None:
        args.mode = LEADER if args.nodes > 1 else STANDALONE
    problem = usage_error(args)
    if problem:
        print(f"chorusdb up: {problem}", file=sys.stderr)
        return EXIT_USAGE
    console = Console()
    # SIGTERM and SIGHUP stop the cluster the way Ctrl-C does: the finally block below stops
    # every node by its PID.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    nodes: list[LocalNode] = []
    try:
        refuse_another_cluster(args.data_dir, args.mode, args.nodes)
        paths = write_configs(args.data_dir, args.nodes, args.mode, args.base_port,
                              args.durability, args.write_quorum)
        try:
            configs = [load_config(path) for path in paths]
        except ConfigError as e:        # a damaged cluster.secret, or a bug in write_configs
            raise SystemExit(f"chorusdb up: a generated config is invalid: {e}") from None
        for path in paths:
            nodes.append(launch_node(path))
        for node in nodes:
            await_ready(node)
        show_cluster(console, nodes, configs[0], args.data_dir)
        while all(node.process.poll() is None for node in nodes):
            time.sleep(0.5)
        dead = [n.node_id for n in nodes if n.process.poll() is not None]
        console.print(f"[red]node(s) {', '.join(dead)} exited; stopping the rest "
                      f"(logs in {args.data_dir})[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("stopping…")
        return 0
    finally:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        for node in nodes:
            stop_node(node)
        if nodes:
            console.print(f"stopped {len(nodes)} node(s); data kept in {args.data_dir}")
