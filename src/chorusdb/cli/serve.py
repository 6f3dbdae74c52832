"""``chorusdb serve --config FILE``: run one node until SIGTERM or SIGINT.

Once the node listens it prints its ready line (``server.process``), which scripts and the test
harness read to learn the bound ports.

``--enable-debug-commands`` makes the node answer ``CHORUS.DEBUG`` (fault injection for the
chaos harness). ``--bug NAME`` switches on one of the mode's known core defects
(``KNOWN_BUGS``) so the checkers can be shown to catch it; it is refused (exit code 2, one
line) without ``--enable-debug-commands`` and for a name the mode does not know.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from chorusdb.core.modes import core_class
from chorusdb.server.config import ConfigError, apply_overrides, load_config
from chorusdb.server.node import Node
from chorusdb.server.process import ready_line

EXIT_CONFIG = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run one node from its TOML config file")
    p.add_argument("--config", required=True, type=Path, help="the node's TOML file")
    p.add_argument("--client", help="override listen.client (HOST:PORT)")
    p.add_argument("--admin", help="override listen.admin (HOST:PORT)")
    p.add_argument("--peer", help="override listen.peer (HOST:PORT)")
    p.add_argument("--data-dir", help="override node.data_dir")
    p.add_argument("--durability", help="override storage.durability (fsync | os)")
    p.add_argument("--requirepass", help="override clients.requirepass")
    p.add_argument("--enable-debug-commands", action="store_true",
                   help="accept test-only commands (fault injection); never in production")
    p.add_argument("--bug", default="",
                   help="switch on a known core bug (testing the checkers; needs "
                        "--enable-debug-commands)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = apply_overrides(
            load_config(args.config), client=args.client, admin=args.admin, peer=args.peer,
            data_dir=args.data_dir, durability=args.durability, requirepass=args.requirepass,
            debug_commands=args.enable_debug_commands)
    except ConfigError as e:
        print(f"chorusdb: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    problem = bug_problem(args.bug, config.mode, config.debug_commands)
    if problem:
        print(f"chorusdb: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    return runner(_serve(config, frozenset({args.bug} - {""})))


def bug_problem(bug: str, mode: str, debug_commands: bool) -> str | None:
    """What is wrong with ``--bug`` (one line), or None."""
    if not bug:
        return None
    if not debug_commands:
        return "--bug needs --enable-debug-commands (it is for testing the checkers only)"
    known = core_class(mode).KNOWN_BUGS
    if bug not in known:
        return f"--bug: unknown bug {bug!r} for mode {mode}; known: {', '.join(sorted(known))}"
    return None


async def _serve(config, bugs: frozenset[str]) -> int:
    node = Node(config, bugs)
    await node.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, node.request_stop)
    client = node.bound_client_address()
    print(ready_line(config.node_id, str(client), f"{config.admin.host}:{node.admin.port}"),
          flush=True)
    try:
        await node.serve_until_stopped()
    except Exception as e:          # a fatal storage error: stop, say why, exit non-zero
        logging.getLogger("chorusdb").critical("node stopped: %s", e)
        return 1
    finally:
        await node.stop()
    return 0
