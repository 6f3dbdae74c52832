"""``AsyncClient``: the engine (engine.py) driven on asyncio with ``redis.asyncio`` connections.

The same as sync_client.py, awaiting instead of blocking: one ``redis.asyncio.ConnectionPool``
per member, each ``Exchange`` written as one packet on one pooled connection and every reply read
through ``redis.asyncio.Redis.parse_response`` (redis-py's callbacks, error replies kept as
values), redis-py's retry off. The engine's steps never await, so on one event loop they need no
lock. A call cancelled mid-exchange disconnects its connection: its replies were not all read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands import AsyncCoreCommands
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from chorusdb.client.base import ClientBase, monotonic_ms
from chorusdb.client.engine import Exchange, Failed, Finished, Pause, Unreachable


class AsyncClient(ClientBase, AsyncCoreCommands):
    """The asyncio twin of ``Client``: the same options, ``await client.get(...)``."""

    def __init__(self, hosts: Sequence[str], **options: object) -> None:
        super().__init__(hosts, **options)
        self._members: dict[str, redis.asyncio.Redis] = {}

    async def execute_command(self, *args: object, **options: object) -> object:
        call = self._new_call(args, options, monotonic_ms())
        while True:
            action = call.next_action(monotonic_ms())
            if isinstance(action, Exchange):
                call.on_result(await self._exchange(action), monotonic_ms())
            elif isinstance(action, Pause):
                await asyncio.sleep(action.ms / 1000)
            elif isinstance(action, Finished):
                return action.value
            else:
                assert isinstance(action, Failed), action
                raise action.error

    def _member(self, address: str) -> redis.asyncio.Redis:
        member = self._members.get(address)
        if member is None:
            pool = redis.asyncio.ConnectionPool(retry=Retry(NoBackoff(), 0),
                                                **self._member_pool_kwargs(address))
            member = self._members[address] = redis.asyncio.Redis(connection_pool=pool)
        return member

    async def _exchange(self, exchange: Exchange) -> list[object] | Unreachable:
        member = self._member(exchange.address)
        pool = member.connection_pool
        try:
            connection = await pool.get_connection()
        except (ConnectionError, TimeoutError) as e:
            return Unreachable(e, sent=False)
        try:
            await connection.send_packed_command(
                connection.pack_commands([command.args for command in exchange.commands]))
            replies: list[object] = []
            for command in exchange.commands:
                try:
                    replies.append(await member.parse_response(
                        connection, command.callback_name, **command.options))
                except ResponseError as e:
                    replies.append(e)
            return replies
        except (ConnectionError, TimeoutError) as e:
            await connection.disconnect()
            return Unreachable(e, sent=True)
        except BaseException:
            await connection.disconnect()   # replies may be left unread: never reuse it
            raise
        finally:
            await pool.release(connection)

    async def aclose(self) -> None:
        """Close every connection of this client (and of its ``reading()`` views)."""
        members = list(self._members.values())
        self._members.clear()
        for member in members:
            await member.connection_pool.disconnect()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
