"""``ChaosCluster``: real ``chorusdb serve`` processes on loopback, every peer link through a proxy.

Layout. Nodes are ``n1`` .. ``nN``. Node ``ni`` gets its own loopback address ``127.a.b.i``
when it can bind there (any Linux; elsewhere every node shares 127.0.0.1), ``a`` from this
process's PID and ``b`` counting the clusters it made, so that the ports of concurrent clusters
and test runs — and the ephemeral ports of 127.0.0.1 — never meet. Its client and peer ports
come from binding port 0 there (held together, so no port is handed out twice, then released
for the node to bind again), and its admin port is 0, read from the ready line on every start.
``workdir/pids.json`` lists every PID the cluster started, kept up to date. Under ``workdir``
each node has a directory ``ni/`` with ``node.toml``, ``node.log`` (the
process's stderr, at INFO, plus a line from the harness at every start and signal) and
``data/``; the cluster secret is ``workdir/cluster.secret``.

Links. For every ordered pair ``(a, b)`` of members, ``a``'s configuration lists the proxy of
link ``(a, b)`` as ``b``'s peer address, while ``b`` listens on its real peer address
(``listen.peer``). ``net.peers`` keeps one connection per direction, dialled by the sender, so
``block({("n1", "n2")})`` silences exactly ``n1 -> n2``. The proxies (``chaos.proxy``) are
reachable as ``proxies`` for delays and resets; ``block`` and ``heal`` cover partitions.
Client connections do not cross a proxy: ``client_address`` is the node's own.

Processes. Each node runs ``python -m chorusdb serve --config node.toml
--enable-debug-commands [--bug NAME]`` with this interpreter and this copy of the package, in
its own session (a Ctrl-C meant for the harness reaches only the harness, which then stops the
nodes itself). A start waits for the node's ready line, as ``chorusdb up`` does; ``start_all``
launches every node before waiting for any. ``kill`` is SIGKILL; ``terminate`` is SIGTERM
(graceful: the node finishes what it received and closes SQLite) with SIGKILL after
``node_stop_timeout_s``; ``pause`` and ``resume`` are SIGSTOP and SIGCONT. A paused node counts
as running (its process exists), but ``status`` does not ask it — it could not answer.
``skew`` sends ``CHORUS.DEBUG CLOCKSKEW`` over RESP.

Teardown stops exactly the processes this cluster started, by PID — never by name: each gets
SIGCONT (a stopped process cannot act on SIGTERM), then SIGTERM, and whatever has not exited
``node_stop_timeout_s`` later gets SIGKILL; then the proxies stop. It runs on ``close()``, on
leaving a ``with`` block (normally or by an exception), at interpreter exit, and on SIGINT or
SIGTERM: the cluster installs handlers (from the main thread) that tear down, call the handler
that was there before if it is a function, and raise ``KeyboardInterrupt`` (SIGINT) or
``SystemExit`` (SIGTERM). A second signal during teardown is ignored so the teardown completes.
``close`` puts the previous handlers back.
"""

from __future__ import annotations

import atexit
import base64
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import chorusdb
from chorusdb.chaos.proxy import BOTH, Blackhole, Link, LinkProxies
from chorusdb.core.leader import LeaderSettings
from chorusdb.core.modes import core_class
from chorusdb.server.config import DURABILITIES, STANDALONE, load_config
from chorusdb.server.process import free_ports, wait_until_ready

node_ready_timeout_s = 30.0       # exec to ready line, on a loaded 2-core machine
node_stop_timeout_s = 10.0        # SIGTERM to exit, before SIGKILL
node_kill_timeout_s = 10.0        # SIGKILL to exit (the kernel's work only)
status_timeout_s = 1.0            # one GET /status
debug_command_timeout_s = 5.0     # one CHORUS.DEBUG request
log_tail_bytes = 3000             # of a node's log in the error of a failed start
secret_random_bytes = 32
CLUSTER_ID = "chaos"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LEADER = LeaderSettings.mode

_cluster_numbers = itertools.count()


def cluster_subnet() -> str:
    """``127.a.b``: ``a`` from this process, ``b`` a new number for each cluster."""
    return f"127.{os.getpid() % 250 + 1}.{next(_cluster_numbers) % 256}"


def node_host(subnet: str, index: int) -> str:
    """``<subnet>.<index>`` if this machine can bind there, else 127.0.0.1."""
    host = f"{subnet}.{index}"
    try:
        with socket.socket() as probe:
            probe.bind((host, 0))
    except OSError:
        return "127.0.0.1"
    return host


def toml_value(value: object) -> str:
    """A bool, int or plain string as TOML (a JSON string is a TOML basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    assert isinstance(value, (int, str)), value
    return json.dumps(value)


def _address(host_port: tuple[str, int]) -> str:
    return f"{host_port[0]}:{host_port[1]}"


class ChaosCluster:
    """See the module docstring. Nothing runs until ``start_all`` or ``start``; the proxies
    listen from construction on."""

    def __init__(self, workdir: Path, mode: str, nodes: int, write_quorum: int = 0,
                 durability: str = "fsync", bug: str = "",
                 leader_settings: dict | None = None) -> None:
        core = core_class(mode)                  # ValueError for an unknown mode
        if nodes < 1 or (mode == STANDALONE and nodes != 1):
            raise ValueError(f"{mode} mode cannot run {nodes} node(s)")
        if (write_quorum or leader_settings) and mode != LEADER:
            raise ValueError(f"write_quorum and leader_settings are for {LEADER} mode only")
        if durability not in DURABILITIES:
            raise ValueError(f"durability: expected one of {DURABILITIES}, got {durability!r}")
        if bug and bug not in core.KNOWN_BUGS:
            raise ValueError(f"unknown bug {bug!r} for mode {mode}; known: "
                             f"{', '.join(sorted(core.KNOWN_BUGS))}")
        self.workdir = Path(workdir)
        self.mode = mode
        self.bug = bug
        self.node_ids = tuple(f"n{i}" for i in range(1, nodes + 1))
        self._clients: dict[str, tuple[str, int]] = {}
        self._peers: dict[str, tuple[str, int]] = {}
        subnet = cluster_subnet()
        for index, node_id in enumerate(self.node_ids, start=1):
            host = node_host(subnet, index)
            client_port, peer_port = free_ports(2, host)
            self._clients[node_id] = (host, client_port)
            self._peers[node_id] = (host, peer_port)
        self._processes: dict[str, subprocess.Popen] = {}
        self._started: list[subprocess.Popen] = []
        self._admin: dict[str, str] = {}
        self._paused: set[str] = set()
        self._previous_handlers: dict[int, object] = {}
        self._closed = False
        self._tearing_down = False
        self.proxies = LinkProxies({(a, b): self._peers[b] for a in self.node_ids
                                    for b in self.node_ids if a != b})
        self.proxies.start()
        try:
            self._write_configs(write_quorum, durability, leader_settings or {})
        except BaseException:
            self.proxies.stop()
            raise
        atexit.register(self.close)
        self._install_signal_handlers()

    def __enter__(self) -> ChaosCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- files ----------------------------------------------------------------------------

    def config_path(self, node_id: str) -> Path:
        return self.workdir / node_id / "node.toml"

    def log_path(self, node_id: str) -> Path:
        return self.workdir / node_id / "node.log"

    def data_dir(self, node_id: str) -> Path:
        return self.workdir / node_id / "data"

    def _write_configs(self, write_quorum: int, durability: str, leader_settings: dict) -> None:
        """Every node's ``node.toml`` (and the secret), each checked by ``load_config``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cluster = f'[cluster]\nid = "{CLUSTER_ID}"\nmode = "{self.mode}"\n'
        if self.mode != STANDALONE:
            secret = self.workdir / "cluster.secret"
            secret.write_bytes(base64.b64encode(secrets.token_bytes(secret_random_bytes)))
            cluster += f"secret_file = {toml_value(str(secret.resolve()))}\n"
        leader = ""
        if self.mode == LEADER:
            settings = {**({"write_quorum": write_quorum} if write_quorum else {}),
                        **leader_settings}
            leader = "\n[leader]\n" + "".join(f"{key} = {toml_value(value)}\n"
                                             for key, value in settings.items())
        for node_id in self.node_ids:
            members = "".join(
                f'\n[[cluster.members]]\nid = "{member}"\n'
                f'peer = "{_address(self._member_peer(node_id, member))}"\n'
                f'client = "{_address(self._clients[member])}"\n' for member in self.node_ids)
            path = self.config_path(node_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                "# Written by the chaos harness; peers are dialled through its link proxies.\n\n"
                f'[node]\nid = "{node_id}"\ndata_dir = "data"\n\n'
                f'[listen]\nclient = "{_address(self._clients[node_id])}"\n'
                f'peer = "{_address(self._peers[node_id])}"\n'
                f'admin = "{self._clients[node_id][0]}:0"\n\n'
                f"{cluster}{members}{leader}\n"
                f'[storage]\ndurability = "{durability}"\n')
            load_config(path)                    # ConfigError here is a bug in this method

    def _member_peer(self, node_id: str, member: str) -> tuple[str, int]:
        """The peer address ``node_id`` lists for ``member``: its own real one, else the
        proxy of link ``(node_id, member)``."""
        if member == node_id:
            return self._peers[node_id]
        return self.proxies.address(node_id, member)

    # --- processes ------------------------------------------------------------------------

    def _command(self, node_id: str) -> list[str]:
        return [sys.executable, "-m", "chorusdb", "serve", "--config",
                str(self.config_path(node_id)), "--log-level", "INFO",
                "--enable-debug-commands", *(["--bug", self.bug] if self.bug else [])]

    def _note(self, node_id: str, text: str) -> None:
        """A line from the harness in the node's log, so its story reads in one place."""
        with open(self.log_path(node_id), "a") as log:
            log.write(f"--- chaos harness {time.strftime('%H:%M:%S')}: {text}\n")

    def _launch(self, node_id: str) -> None:
        assert not self._closed, "the cluster is closed"
        assert not self.is_running(node_id), f"{node_id} is running"
        command = self._command(node_id)
        # The nodes run this very copy of the package, whatever the working directory.
        package_root = str(Path(chorusdb.__file__).resolve().parent.parent)
        python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                      if p)
        self._note(node_id, f"starting: {' '.join(command)}")
        with open(self.log_path(node_id), "ab") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                       start_new_session=True,
                                       env={**os.environ, "PYTHONPATH": python_path})
        self._started.append(process)
        self._processes[node_id] = process
        self._paused.discard(node_id)
        # Every PID this cluster ever started, for whoever checks that none outlives it.
        (self.workdir / "pids.json").write_text(json.dumps([p.pid for p in self._started]))

    def _await_ready(self, node_id: str) -> None:
        process = self._processes[node_id]
        fields = wait_until_ready(process, node_ready_timeout_s)
        if fields is None:
            self._reap(node_id, signal.SIGKILL, node_kill_timeout_s)
            raise RuntimeError(f"{node_id} did not start; the end of its log "
                               f"({self.log_path(node_id)}):\n{self._log_tail(node_id)}")
        self._admin[node_id] = fields["admin"]
        self._note(node_id, f"ready, pid {process.pid}")

    def _log_tail(self, node_id: str) -> str:
        with open(self.log_path(node_id), "rb") as f:
            f.seek(max(0, self.log_path(node_id).stat().st_size - log_tail_bytes))
            return f.read().decode("utf-8", "replace")

    def start_all(self) -> None:
        """Start every node that is not running, side by side; return once all are ready."""
        stopped = [n for n in self.node_ids if not self.is_running(n)]
        for node_id in stopped:
            self._launch(node_id)
        for node_id in stopped:
            self._await_ready(node_id)

    def start(self, node_id: str) -> None:
        """Start one node on its data; return once it is ready."""
        self._launch(node_id)
        self._await_ready(node_id)

    def kill(self, node_id: str) -> None:
        """SIGKILL, and wait until the process is gone."""
        self._note(node_id, "SIGKILL")
        self._reap(node_id, signal.SIGKILL, node_kill_timeout_s)

    def terminate(self, node_id: str) -> int:
        """SIGTERM (SIGCONT first if paused) and wait; SIGKILL if it takes longer than
        ``node_stop_timeout_s``. The exit code."""
        self._note(node_id, "SIGTERM")
        return self._reap(node_id, signal.SIGTERM, node_stop_timeout_s)

    def restart_gracefully(self, node_id: str) -> None:
        self.terminate(node_id)
        self.start(node_id)

    def pause(self, node_id: str) -> None:
        """SIGSTOP: the process freezes with its sockets open."""
        self._running_process(node_id).send_signal(signal.SIGSTOP)
        self._paused.add(node_id)
        self._note(node_id, "SIGSTOP")

    def resume(self, node_id: str) -> None:
        """SIGCONT a paused node; nothing for one that is not paused or not running."""
        if node_id in self._paused and self.is_running(node_id):
            self._processes[node_id].send_signal(signal.SIGCONT)
            self._note(node_id, "SIGCONT")
        self._paused.discard(node_id)

    def _running_process(self, node_id: str) -> subprocess.Popen:
        assert self.is_running(node_id), f"{node_id} is not running"
        return self._processes[node_id]

    def _reap(self, node_id: str, signum: int, timeout_s: float) -> int:
        """Send ``signum`` to the node's process and wait for it; SIGKILL after
        ``timeout_s``. The exit code (also of a process that had already exited)."""
        process = self._processes[node_id]
        if process.poll() is not None:
            return self._wait(process, 0)
        if node_id in self._paused:
            process.send_signal(signal.SIGCONT)
            self._paused.discard(node_id)
        process.send_signal(signum)
        try:
            return self._wait(process, timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            return self._wait(process, node_kill_timeout_s)

    @staticmethod
    def _wait(process: subprocess.Popen, timeout_s: float) -> int:
        """Wait (always with a time limit: a signal handler may run this) and close our end
        of its stdout."""
        code = process.wait(timeout_s)
        if process.stdout is not None:
            process.stdout.close()
        return code

    # --- faults through the network and the clock -----------------------------------------

    def block(self, links: set[Link], direction: str = BOTH) -> None:
        """Blackhole ``links`` (``(src, dst)`` pairs of node ids) in ``direction``, all at
        once; the other links keep their modes."""
        self.proxies.set_modes({link: Blackhole(direction) for link in links})

    def heal(self) -> None:
        """Every link passes again; held bytes are delivered."""
        self.proxies.heal()

    def skew(self, node_id: str, delta_ms: int) -> int:
        """Move the node's clock by ``delta_ms``; its new clock offset in ms.
        ``redis.ResponseError`` if the node refuses."""
        host, port = self.client_address(node_id)
        with redis.Redis(host=host, port=port, socket_timeout=debug_command_timeout_s,
                         socket_connect_timeout=debug_command_timeout_s,
                         retry=Retry(NoBackoff(), 0), single_connection_client=True) as client:
            offset = client.execute_command("CHORUS.DEBUG", "CLOCKSKEW", delta_ms)
        self._note(node_id, f"clock skewed by {delta_ms:+d} ms, offset {offset:+d} ms")
        return offset

    # --- observing ------------------------------------------------------------------------

    def status(self, node_id: str) -> dict | None:
        """The node's ``/status``; None if it is not running, paused, or does not answer
        within ``status_timeout_s``."""
        admin = self._admin.get(node_id)
        if admin is None or not self.is_running(node_id) or node_id in self._paused:
            return None
        try:
            with urllib.request.urlopen(f"http://{admin}/status",
                                        timeout=status_timeout_s) as answer:
                return json.load(answer)
        except (OSError, ValueError):
            return None

    def client_address(self, node_id: str) -> tuple[str, int]:
        return self._clients[node_id]

    def admin_address(self, node_id: str) -> str | None:
        """``host:port`` of the node's admin HTTP API, once it has started."""
        return self._admin.get(node_id)

    def is_running(self, node_id: str) -> bool:
        """Its process exists (a paused one included)."""
        process = self._processes.get(node_id)
        return process is not None and process.poll() is None

    def is_paused(self, node_id: str) -> bool:
        return node_id in self._paused and self.is_running(node_id)

    def pids(self) -> dict[str, int]:
        """The PIDs of the running nodes."""
        return {n: p.pid for n, p in self._processes.items() if p.poll() is None}

    # --- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process this cluster started and the proxies; safe to call again."""
        if self._closed:
            return
        self._closed = self._tearing_down = True
        try:
            self._stop_all()
        finally:
            self.proxies.stop()
            self._restore_signal_handlers()
            atexit.unregister(self.close)
            self._tearing_down = False

    def _stop_all(self) -> None:
        """SIGCONT and SIGTERM to every process still running, together; SIGKILL to those
        still there ``node_stop_timeout_s`` later."""
        alive = [p for p in self._started if p.poll() is None]
        for process in alive:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + node_stop_timeout_s
        for process in alive:
            try:
                self._wait(process, max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                self._wait(process, node_kill_timeout_s)
        for process in self._started:
            if process.stdout is not None and not process.stdout.closed:
                process.stdout.close()
        self._paused.clear()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return                       # only the main thread may; atexit still covers it
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, previous in self._previous_handlers.items():
            if signal.getsignal(signum) == self._on_signal:    # not replaced by someone since
                signal.signal(signum, previous)

    def _on_signal(self, signum: int, frame: object) -> None:
        """Tear down, then hand on to the handler installed before (still called when another
        cluster's handler, installed later, hands on to this one after this one closed)."""
        if self._tearing_down:
            return                       # a second signal while tearing down: finish first
        self.close()
        previous = self._previous_handlers.get(signum)
        if callable(previous):
            previous(signum, frame)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
