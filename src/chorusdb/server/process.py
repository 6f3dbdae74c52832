"""A ``chorusdb serve`` process seen from outside: its ready line, and stopping it by its PID.

Once a node listens it prints one line to stdout, which ``chorusdb up``, the benchmark and the
tests read to learn the ports it bound (a configured port of 0 means "any free port"):

    chorusdb ready node=n1 client=127.0.0.1:7001 admin=127.0.0.1:7201

Whoever writes configs for several nodes picks their ports with ``free_ports``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from contextlib import ExitStack

READY_PREFIX = "chorusdb ready"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different ports free on ``host`` now: every socket is held until all are
    bound, so the kernel cannot hand out one port twice."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]


def ready_line(node_id: str, client: str, admin: str) -> str:
    return f"{READY_PREFIX} node={node_id} client={client} admin={admin}"


def parse_ready_line(line: str) -> dict[str, str] | None:
    """The fields (``node``, ``client``, ``admin``) of a ready line; None for any other line."""
    if not line.startswith(READY_PREFIX):
        return None
    return dict(part.split("=", 1) for part in line.split()[2:])


def wait_until_ready(process: subprocess.Popen, timeout_s: float) -> dict[str, str] | None:
    """Read a started node's stdout (a text pipe) until its ready line; its fields, or None if
    the process ended or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            return None
        fields = parse_ready_line(line)
        if fields is not None:
            return fields
    return None


def stop_process(process: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM this PID, SIGKILL it if it is still there after ``timeout_s``; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
