"""Shared fixtures: real ``chorusdb serve`` processes on loopback, stopped by their own PID."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from chorusdb.server.process import wait_until_ready

node_ready_timeout_s = 30.0
node_stop_timeout_s = 15.0


@dataclass
class RunningNode:
    process: subprocess.Popen
    config_path: Path
    data_dir: Path
    host: str
    port: int
    admin: str
    extra_args: tuple[str, ...]

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(node_stop_timeout_s)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(node_stop_timeout_s)


def write_node_config(directory: Path, *, durability: str = "fsync", requirepass: str = "",
                      idle_timeout_s: float = 0, clients_max: int = 10_000) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "node.toml"
    path.write_text(
        '[node]\nid = "n1"\ndata_dir = "data"\n\n'
        '[listen]\nclient = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n\n'
        '[cluster]\nid = "test"\nmode = "standalone"\n\n'
        f'[storage]\ndurability = "{durability}"\n\n'
        f'[clients]\nrequirepass = "{requirepass}"\nidle_timeout_s = {idle_timeout_s}\n'
        f'max = {clients_max}\n')
    return path


def start_node(config_path: Path, *extra_args: str) -> RunningNode:
    process = subprocess.Popen(
        [sys.executable, "-m", "chorusdb", "serve", "--config", str(config_path),
         "--log-level", "WARNING", *extra_args],
        stdout=subprocess.PIPE, text=True)
    fields = wait_until_ready(process, node_ready_timeout_s)
    if fields is not None:
        host, port = fields["client"].rsplit(":", 1)
        return RunningNode(process, config_path, config_path.parent / "data", host, int(port),
                           fields["admin"], extra_args)
    process.kill()
    process.wait()
    raise RuntimeError(f"chorusdb serve --config {config_path} did not become ready")


@pytest.fixture
def node_factory(tmp_path):
    """Start nodes from configs in tmp dirs; every process started is stopped by its PID."""
    started: list[RunningNode] = []

    def factory(name: str = "node", **config) -> RunningNode:
        node = start_node(write_node_config(tmp_path / name, **config))
        started.append(node)
        return node

    def restart(node: RunningNode) -> RunningNode:
        again = start_node(node.config_path, *node.extra_args)
        started.append(again)
        return again

    factory.restart = restart
    yield factory
    for node in started:
        if node.process.poll() is None:
            node.process.kill()
            node.process.wait()


@pytest.fixture
def node(node_factory) -> RunningNode:
    return node_factory()
