"""``chorusdb switchover --to NODE``: hand leadership to another member, planned.

Unlike a failover, nothing has failed: the leader lets the target catch up with its log, then
tells it to run for election at once, so the cluster is without a leader for one election
round rather than an election timeout. ``CHORUS.SWITCHOVER node [timeout_ms]`` does it on the
leader (``core.commands``); this command finds the leader and sends it.

``--node`` takes one or more client addresses (default: the local cluster of ``chorusdb up``).
Each is asked ``INFO replication`` in turn: the first that reports ``chorus_role:leader`` gets
the command; if none does, the leader a follower is linked to (``master_host:master_port``
with ``master_link_status:up``). ``--timeout-ms`` bounds the switchover (default: the leader's
``leader.switchover_timeout_ms``).

Exit codes: 0 once the leader answers that leadership moved (its message is printed); 1 when
no leader could be found or the leader answered an error — ``-TRYAGAIN`` (the target did not
catch up or win in time; run it again, maybe with a longer ``--timeout-ms``) or ``-ERR`` (for
example a node that is not a member or not a candidate); 2 for bad flags.
"""

from __future__ import annotations

import argparse
import sys

from chorusdb.cli.status import (
    NodeRefused,
    NodeUnreachable,
    add_password_argument,
    call_node,
    host_port_list,
    refusal_hint,
)
from chorusdb.cli.up import local_client_addresses

COMMAND = "CHORUS.SWITCHOVER"
# The leader answers within its timeout; the reply may take this much longer to arrive.
reply_margin_s = 5.0
# Without --timeout-ms the leader's own switchover_timeout_ms applies, which the command line
# does not know: this only bounds a leader that never answers.
reply_wait_s_max = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("switchover", help="hand leadership to another member")
    p.add_argument("--to", required=True, metavar="NODE",
                   help="the member id that is to lead (a candidate that is up)")
    p.add_argument("--node", type=host_port_list, default=local_client_addresses(),
                   help="client HOST:PORT of a node, or several separated by commas; the "
                        "command goes to the leader among them, or the one they follow "
                        f"(default: the local cluster, {','.join(local_client_addresses())})")
    p.add_argument("--timeout-ms", type=timeout_ms,
                   help="give up after this long (default: the leader's "
                        "leader.switchover_timeout_ms)")
    add_password_argument(p)
    p.set_defaults(func=run)


def timeout_ms(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected milliseconds, a number >= 1, got {text!r}")
    return int(text)


def find_leader(addresses: list[str], password: str | None) -> str:
    """The client address of the leader, found as the module docstring says; ``LookupError``
    says why there is none, and what to do."""
    followed = None
    problems = []
    for address in addresses:
        try:
            info = call_node(address, "INFO", "replication", password=password)
        except NodeRefused as e:
            problems.append(f"{address} answered: {e}")
            continue
        except NodeUnreachable as e:
            problems.append(str(e))
            continue
        if info.get("chorus_role") == "leader":
            return address
        if followed is None and info.get("master_link_status") == "up":
            followed = f"{info['master_host']}:{info['master_port']}"
    if followed is not None:
        return followed
    if len(problems) == len(addresses):
        step = ("is the cluster running? ('chorusdb up' starts a local one; --node names the "
                "client addresses of another)")
    else:
        step = ("if an election is under way, try again in a moment ('chorusdb status' shows "
                "the roles), or pass --node with the leader's client address")
    raise LookupError("no leader among " + ", ".join(addresses)
                      + "".join(f"; {problem}" for problem in problems) + f"; {step}")


def run(args: argparse.Namespace) -> int:
    try:
        leader = find_leader(args.node, args.password)
    except LookupError as e:
        return _complain(str(e))
    words = [COMMAND, args.to]
    wait_s = reply_wait_s_max
    if args.timeout_ms is not None:
        words.append(str(args.timeout_ms))
        wait_s = args.timeout_ms / 1000 + reply_margin_s
    try:
        reply = call_node(leader, *words, timeout_s=wait_s, password=args.password)
    except NodeUnreachable as e:
        return _complain(f"{e}; the switchover may still complete: 'chorusdb status' shows "
                         "who leads")
    except NodeRefused as e:
        if e.code == "TRYAGAIN":
            step = (f"nothing changed; run it again, or with a --timeout-ms longer than the "
                    f"time {args.to} needs to catch up")
        else:
            step = refusal_hint(e, f"check that {args.to} is a member and a candidate that is "
                                   "up ('chorusdb status')")
        return _complain(f"the leader at {leader} answered: {e}; {step}")
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    print(text)
    return 0


def _complain(message: str) -> int:
    print(f"chorusdb switchover: {message}", file=sys.stderr)
    return 1
