"""The client's decisions, without I/O: shared cluster knowledge and one call's state machine.

Both drivers (``Client`` on threads, ``AsyncClient`` on asyncio) run every command the same way:

    call = Call(state, args, options, read_options, now_ms)
    while True:
        action = call.next_action(now_ms)
        Exchange(address, commands) -> send the commands pipelined on one pooled connection to
                                       that member, parse every reply with redis-py's callbacks
                                       (an error reply becomes a ResponseError value) and pass
                                       the list to call.on_result, or Unreachable(error, sent)
                                       when connecting or the exchange failed
        Pause(ms)                   -> sleep
        Finished(value)             -> return value
        Failed(error)               -> raise error

Nothing here reads a clock or touches a socket: time comes in as ``now_ms``, randomness as a
seeded ``random.Random`` and a request-id function, so the unit tests drive it step by step.

What a call sends (who sends what):

- a read: ``CHORUS.WAITPOS <epoch> <index> <session_wait_ms> [MAXLAG n] [MAXSTALENESS ms]
  [LINEARIZABLE]`` (the flag on reads meant for the leader: a member that no longer leads
  refuses with ``-NOTLEADER`` rather than answer from its own state, so ``read_from="leader"``
  stays linearizable through a failover the client has not heard of yet),
  the read, ``CHORUS.TOKEN`` — pipelined, one round trip. The member runs the read only once it
  has applied the session token and meets the bounds; if it cannot within ``session_wait_ms``
  it answers ``-TRYAGAIN``, the read's answer is thrown away (it may be stale) and the read goes
  to the leader;
- a write: ``[CHORUS.ONCE <request-id>] <write>``, ``CHORUS.TOKEN`` — to the leader; the id is
  drawn once per call and sent on every retry (commands.py says which writes carry one);
- anything else: the command alone, to the leader when one is known, else any member;
- ``CHORUS.TOPOLOGY`` to one member after another, whenever the topology is unknown, was
  marked stale by a failure, or is older than ``topology_refresh_ms``.

Every ``CHORUS.TOKEN`` answer raises the session token (``ClusterState.observe_token``).
Failures follow retry.py; a retried failure refreshes the topology and waits the backoff, until
``retry_deadline_ms`` after the call began, then ``ClusterUnavailableError``.

``ClusterState`` is shared by every call of a client (and of its ``reading()`` views): the
topology with the highest epoch seen, which members refused connections lately, the session
token and the round-robin turn for reads. The sync driver holds a lock around each step.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from chorusdb.client.commands import (ONCE_COMMAND, Kind, command_name, kind_of,
                                      needs_request_id, new_request_id)
from chorusdb.client.errors import ClusterUnavailableError
from chorusdb.client.retry import Failure, backoff_ms, classify, should_retry
from chorusdb.client.settings import (ClientSettings, ReadFrom, ReadOptions,
                                      failures_reported_max, member_down_ms)
from chorusdb.client.token import ZERO, Token
from chorusdb.client.topology import Topology, parse_topology

TOPOLOGY_COMMAND = b"CHORUS.TOPOLOGY"
TOKEN_COMMAND = b"CHORUS.TOKEN"
WAIT_POSITION_COMMAND = b"CHORUS.WAITPOS"
LINEARIZABLE_FLAG = b"LINEARIZABLE"


# --- what a driver is asked to do ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """One command of an exchange. ``callback_name`` is the name redis-py's response callbacks
    know the reply by (the wrapped command's for ``CHORUS.ONCE``); ``options`` are the keyword
    options redis-py's command method passed along for that callback."""

    args: tuple[object, ...]
    callback_name: str | bytes
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Exchange:
    """Send ``commands`` pipelined on one connection to ``address``; return every reply."""

    address: str
    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Pause:
    ms: int


@dataclass(frozen=True, slots=True)
class Finished:
    value: object


@dataclass(frozen=True, slots=True)
class Failed:
    error: Exception


Action = Exchange | Pause | Finished | Failed


@dataclass(frozen=True, slots=True)
class Unreachable:
    """What a driver reports when an exchange got no replies: connecting failed (``sent``
    False: nothing left) or the connection broke or timed out after the request may have left
    (``sent`` True)."""

    error: Exception
    sent: bool

_TOPOLOGY = Command((TOPOLOGY_COMMAND,), TOPOLOGY_COMMAND)
_TOKEN = Command((TOKEN_COMMAND,), TOKEN_COMMAND)


def describe(error: Exception) -> str:
    """An error as the failure list quotes it (redis-py's own repr drops the message)."""
    return f"{type(error).__name__}: {error}"


# --- what every call of one client shares -----------------------------------------------------


class ClusterState:
    """The cluster as this client knows it, and the session. See the module docstring."""

    def __init__(self, seeds: Sequence[str], settings: ClientSettings,
                 session_token: Token = ZERO, rng: random.Random | None = None,
                 request_id: Callable[[], str] = new_request_id) -> None:
        if isinstance(seeds, str) or not seeds:
            raise ValueError(f"hosts must be a non-empty list of 'host:port', not {seeds!r}")
        for seed in seeds:
            host, _, port = seed.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"a host is 'host:port', not {seed!r}")
        self.seeds = tuple(seeds)
        self.settings = settings
        self.token = session_token
        self.rng = rng if rng is not None else random.Random()
        self.request_id = request_id
        self.topology: Topology | None = None
        self.topology_ms = 0
        self.refresh_wanted = True
        self.down_until_ms: dict[str, int] = {}
        self.turn = 0                   # round robin over readers and topology sources

    # --- the session ---

    def observe_token(self, reply: object) -> None:
        """A ``CHORUS.TOKEN`` answer: the session token becomes the higher of the two."""
        token = Token.parse(reply if isinstance(reply, (bytes, str)) else str(reply))
        if token > self.token:
            self.token = token

    # --- members ---

    def observe_topology(self, topology: Topology, now_ms: int) -> None:
        """Keep an answer unless one of a higher epoch is known (a follower that missed an
        election names the old leader). A newer epoch forgets which members were down: the
        cluster changed, and a new leader may be one of them back."""
        current = self.topology
        if current is None or topology.epoch >= current.epoch:
            if current is not None and topology.epoch > current.epoch:
                self.down_until_ms.clear()
            self.topology = topology
        self.topology_ms = now_ms
        self.refresh_wanted = False

    def mark_down(self, address: str, now_ms: int) -> None:
        self.down_until_ms[address] = now_ms + member_down_ms
        self.refresh_wanted = True

    def is_up(self, address: str, now_ms: int) -> bool:
        return self.down_until_ms.get(address, now_ms) <= now_ms

    def needs_refresh(self, now_ms: int) -> bool:
        return (self.topology is None or self.refresh_wanted
                or now_ms - self.topology_ms >= self.settings.topology_refresh_ms)

    def topology_sources(self, now_ms: int) -> list[str]:
        """Whom to ask for the topology, best first: members that are up (the leader first,
        then the others in turn), the seeds nobody named, then members marked down."""
        known = [] if self.topology is None else [m.address for m in self.topology.members]
        leader = None if self.topology is None or self.topology.leader is None \
            else self.topology.leader.address
        others = [a for a in known if a != leader]
        if others:              # in turn, so a follower that missed an election is not asked
            self.turn += 1      # every time
            shift = self.turn % len(others)
            others = others[shift:] + others[:shift]
        ordered = ([leader] if leader else []) + others + \
            [seed for seed in self.seeds if seed not in known]
        return sorted(ordered, key=lambda address: not self.is_up(address, now_ms))

    def leader_address(self, now_ms: int) -> str | None:
        leader = None if self.topology is None else self.topology.leader
        return leader.address if leader is not None and self.is_up(leader.address, now_ms) \
            else None

    def read_address(self, read_from: ReadFrom, now_ms: int) -> str | None:
        """The member to serve a read under ``read_from``: the leader, or the next follower (or
        member) that is up in round-robin order; the leader when none is."""
        leader = self.leader_address(now_ms)
        if read_from is ReadFrom.LEADER or self.topology is None:
            return leader
        pool = self.topology.followers if read_from is ReadFrom.FOLLOWER \
            else self.topology.members
        up = [m.address for m in pool if self.is_up(m.address, now_ms)]
        if not up:
            return leader
        self.turn += 1
        return up[self.turn % len(up)]

    def any_address(self, now_ms: int) -> str | None:
        """For commands that are neither reads nor writes: the leader, else any member up."""
        leader = self.leader_address(now_ms)
        if leader is not None or self.topology is None:
            return leader
        return next((m.address for m in self.topology.members
                     if self.is_up(m.address, now_ms)), None)


# --- one call -------------------------------------------------------------------------------


class Call:
    """One command, from its first attempt to its answer or its final error."""

    def __init__(self, state: ClusterState, args: Sequence[object],
                 options: Mapping[str, object], read_options: ReadOptions, now_ms: int) -> None:
        assert args, "a command has a name"
        self.state = state
        self.args = tuple(args)
        self.options = dict(options)
        self.read_options = read_options
        self.kind = kind_of(self.args)
        self.request_id = state.request_id() if self.kind is Kind.WRITE and \
            needs_request_id(self.args, state.settings.request_ids) else None
        self.started_ms = now_ms
        self.deadline_ms = now_ms + state.settings.retry_deadline_ms
        self.resume_ms = now_ms
        self.attempts = 0
        self.failures: deque[str] = deque(maxlen=failures_reported_max)
        self.asked: set[str] = set()        # topology sources asked since the last backoff
        self.read_on_leader = read_options.read_from is ReadFrom.LEADER
        self.sent: Exchange | None = None
        self.sent_to_leader = False
        self.outcome: Finished | Failed | None = None

    # --- what to do next ---

    def next_action(self, now_ms: int) -> Action:
        assert self.sent is None, "on_replies or on_unreachable first"
        if self.outcome is not None:
            return self.outcome
        if now_ms < self.resume_ms:
            return Pause(self.resume_ms - now_ms)
        state = self.state
        if state.needs_refresh(now_ms):
            source = next((a for a in state.topology_sources(now_ms) if a not in self.asked),
                          None)
            if source is not None:
                self.asked.add(source)
                self.sent = Exchange(source, (_TOPOLOGY,))
                return self.sent
            self._retry_later("no member answered CHORUS.TOPOLOGY", now_ms)
            return self.next_action(now_ms)
        address = self._target(now_ms)
        if address is None:
            state.refresh_wanted = True
            self._retry_later("no leader known" if self.kind is not Kind.READ or
                              self.read_on_leader else "no member can serve reads", now_ms)
            return self.next_action(now_ms)
        self.sent_to_leader = address == state.leader_address(now_ms)
        self.sent = Exchange(address, self._commands())
        return self.sent

    def _target(self, now_ms: int) -> str | None:
        state = self.state
        if self.kind is Kind.WRITE or (self.kind is Kind.READ and self.read_on_leader):
            return state.leader_address(now_ms)
        if self.kind is Kind.READ:
            return state.read_address(self.read_options.read_from, now_ms)
        return state.any_address(now_ms)

    def _commands(self) -> tuple[Command, ...]:
        name = self.args[0]
        if self.kind is Kind.OTHER:
            return (Command(self.args, name, self.options),)
        if self.kind is Kind.WRITE:
            wrapped = self.args if self.request_id is None else \
                (ONCE_COMMAND, self.request_id, *self.args)
            return (Command(wrapped, name, self.options), _TOKEN)
        token, read = self.state.token, self.read_options
        wait: list[object] = [WAIT_POSITION_COMMAND, token.epoch, token.index,
                              self.state.settings.session_wait_ms]
        if read.max_lag_entries is not None:
            wait += [b"MAXLAG", read.max_lag_entries]
        if read.max_staleness_ms is not None:
            wait += [b"MAXSTALENESS", read.max_staleness_ms]
        if self.read_on_leader:
            wait.append(LINEARIZABLE_FLAG)      # a member that no longer leads refuses the read
        return (Command(tuple(wait), WAIT_POSITION_COMMAND), Command(self.args, name, self.options),
                _TOKEN)

    # --- what came back ---

    def on_result(self, result: Sequence[object] | Unreachable, now_ms: int) -> None:
        """What the driver got for the last ``Exchange``."""
        if isinstance(result, Unreachable):
            self.on_unreachable(result.error, result.sent, now_ms)
        else:
            self.on_replies(result, now_ms)

    def on_replies(self, replies: Sequence[object], now_ms: int) -> None:
        """Every reply of the exchange, in order; an error reply as a ResponseError value."""
        sent, self.sent = self.sent, None
        assert sent is not None and len(replies) == len(sent.commands), (sent, replies)
        if sent.commands[0] is _TOPOLOGY:
            self._on_topology(sent.address, replies[0], now_ms)
            return
        answer = replies[0] if self.kind is Kind.OTHER else replies[-2]
        if self.kind is not Kind.OTHER and not isinstance(replies[-1], Exception):
            try:
                self.state.observe_token(replies[-1])
            except ValueError as e:
                self.outcome = Failed(RedisError(f"{sent.address} answered CHORUS.TOKEN "
                                                 f"with {replies[-1]!r}: {e}"))
                return
        if self.kind is Kind.READ and isinstance(replies[0], Exception):
            self._on_wait_failed(sent.address, replies[0], now_ms)
        elif isinstance(answer, Exception):
            self._on_failure(sent.address, answer, sent=True, now_ms=now_ms)
        elif self.kind is not Kind.OTHER and isinstance(replies[-1], Exception):
            # The command was answered but the session cannot be tracked: a node that does
            # not know CHORUS.TOKEN cannot serve a session, and saying so beats a silent gap.
            self.outcome = Failed(replies[-1])
        else:
            self.outcome = Finished(answer)

    def on_unreachable(self, error: Exception, sent: bool, now_ms: int) -> None:
        """Connecting failed (``sent`` False: nothing left), or the exchange broke off or timed
        out after the request may have left (``sent`` True)."""
        exchange, self.sent = self.sent, None
        assert exchange is not None
        if classify(error) is Failure.UNREACHABLE:
            self.state.mark_down(exchange.address, now_ms)
        if exchange.commands[0] is _TOPOLOGY and classify(error) is Failure.UNREACHABLE:
            self.failures.append(f"{exchange.address}: CHORUS.TOPOLOGY: {describe(error)}")
            return              # the next source in this round is asked at once
        self._on_failure(exchange.address, error, sent=sent, now_ms=now_ms)

    def _on_topology(self, address: str, reply: object, now_ms: int) -> None:
        if isinstance(reply, Exception):
            self.failures.append(f"{address}: CHORUS.TOPOLOGY: {describe(reply)}")
            return
        try:
            topology = parse_topology(reply)
        except ValueError as e:
            self.failures.append(f"{address}: {e}")
            return
        self.state.observe_topology(topology, now_ms)
        self.asked.clear()

    def _on_wait_failed(self, address: str, error: Exception, now_ms: int) -> None:
        """``CHORUS.WAITPOS`` failed: the read's answer is thrown away. A member other than the
        leader that could not catch up in time hands the read to the leader (no pause: the
        leader is the fallback, not a retry)."""
        if classify(error) is Failure.TRY_AGAIN and not self.sent_to_leader:
            self.failures.append(f"{address}: {describe(error)}")
            self.read_on_leader = True
            return
        self._on_failure(address, error, sent=True, now_ms=now_ms)

    def _on_failure(self, address: str, error: Exception, sent: bool, now_ms: int) -> None:
        failure = classify(error)
        if not should_retry(failure, self.kind, self.request_id is not None, sent):
            self.outcome = Failed(error)
            return
        self.state.refresh_wanted = True
        self._retry_later(f"{address}: {describe(error)}", now_ms)

    def _retry_later(self, why: str, now_ms: int) -> None:
        """Wait the next backoff step, or give up if that would pass the deadline."""
        self.failures.append(why)
        self.attempts += 1
        pause_ms = backoff_ms(self.attempts, self.state.rng)
        if now_ms + pause_ms > self.deadline_ms:
            self.outcome = Failed(self._unavailable(now_ms))
            return
        self.resume_ms = now_ms + pause_ms
        self.asked.clear()

    def _unavailable(self, now_ms: int) -> ClusterUnavailableError:
        what = command_name(self.args).decode("utf-8", "replace")
        if self.request_id is not None:
            what += f" (request id {self.request_id})"
        return ClusterUnavailableError(
            f"gave up on {what} after {self.attempts} failed attempts in "
            f"{now_ms - self.started_ms} ms (retry_deadline_ms "
            f"{self.state.settings.retry_deadline_ms}); seeds {list(self.state.seeds)}; "
            f"latest failures: " + "; ".join(self.failures))
