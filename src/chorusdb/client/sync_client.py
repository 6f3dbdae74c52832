"""``Client``: the engine (engine.py) driven on threads with redis-py's blocking connections.

This module only moves bytes: it keeps one redis-py ``ConnectionPool`` per member (created the
first time the engine names that member's address), and for each ``Exchange`` takes a connection
from the member's pool, writes every command of the exchange in one packet, and reads each reply
through ``redis.Redis.parse_response`` — so redis-py's own response callbacks apply, chosen by
the command name (the wrapped command's name for ``CHORUS.ONCE``). An error reply is kept as a
value so the replies after it are still read and the connection stays in step; a connection that
failed mid-exchange is disconnected before it goes back to the pool.

redis-py's own retry is off (``Retry(NoBackoff(), 0)``): it would send a write a second time
behind the engine's back. All retrying is the engine's.

Thread safety: many threads may call one client. The engine's shared state (topology, session
token, round-robin turn) is touched only under one lock, held for each engine step, never
across I/O; the pools are redis-py's thread-safe ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import redis
from redis.backoff import NoBackoff
from redis.commands import CoreCommands
from redis.exceptions import ConnectionError, ResponseError, TimeoutError
from redis.retry import Retry

from chorusdb.client.base import ClientBase, monotonic_ms
from chorusdb.client.engine import Exchange, Failed, Finished, Pause, Unreachable


class Client(ClientBase, CoreCommands):
    """A cluster-aware, thread-safe ChorusDB client with redis-py's command methods; see the
    package docstring."""

    def __init__(self, hosts: Sequence[str], **options: object) -> None:
        super().__init__(hosts, **options)
        self._lock = threading.Lock()
        self._members: dict[str, redis.Redis] = {}

    def execute_command(self, *args: object, **options: object) -> object:
        lock, now_ms = self._lock, monotonic_ms
        with lock:
            call = self._new_call(args, options, now_ms())
        while True:
            with lock:
                action = call.next_action(now_ms())
            if isinstance(action, Exchange):
                result = self._exchange(action)
                with lock:
                    call.on_result(result, now_ms())
            elif isinstance(action, Pause):
                time.sleep(action.ms / 1000)
            elif isinstance(action, Finished):
                return action.value
            else:
                assert isinstance(action, Failed), action
                raise action.error

    def _member(self, address: str) -> redis.Redis:
        with self._lock:
            member = self._members.get(address)
            if member is None:
                pool = redis.ConnectionPool(retry=Retry(NoBackoff(), 0),
                                            **self._member_pool_kwargs(address))
                member = self._members[address] = redis.Redis(connection_pool=pool)
            return member

    def _exchange(self, exchange: Exchange) -> list[object] | Unreachable:
        member = self._member(exchange.address)
        pool = member.connection_pool
        try:
            connection = pool.get_connection()
        except (ConnectionError, TimeoutError) as e:
            return Unreachable(e, sent=False)
        try:
            connection.send_packed_command(
                connection.pack_commands([command.args for command in exchange.commands]))
            replies: list[object] = []
            for command in exchange.commands:
                try:
                    replies.append(member.parse_response(connection, command.callback_name,
                                                         **command.options))
                except ResponseError as e:
                    replies.append(e)
            return replies
        except (ConnectionError, TimeoutError) as e:
            connection.disconnect()
            return Unreachable(e, sent=True)
        except BaseException:
            connection.disconnect()     # replies may be left unread: never reuse it
            raise
        finally:
            pool.release(connection)

    def close(self) -> None:
        """Close every connection of this client (and of its ``reading()`` views)."""
        with self._lock:
            members = list(self._members.values())
            self._members.clear()
        for member in members:
            member.connection_pool.disconnect()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
