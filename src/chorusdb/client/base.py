"""What ``Client`` and ``AsyncClient`` share besides the engine: their options, their session
accessors, ``reading()`` views and the keyword arguments of their per-member connection pools.

Both drivers subclass ``ClientBase`` and one of redis-py's command mixins (``CoreCommands`` or
``AsyncCoreCommands``), which turn ``client.set(...)``, ``client.lrange(...)`` and the rest into
``execute_command(*args, **options)``; the driver runs that through the engine.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from typing import Self

from redis.connection import Encoder

from chorusdb.client.commands import RequestIds
from chorusdb.client.engine import Call, ClusterState
from chorusdb.client.settings import (ClientSettings, ReadFrom, ReadOptions,
                                      connections_per_member_max, retry_deadline_ms_default,
                                      session_wait_ms_default, socket_connect_timeout_ms_default,
                                      socket_timeout_ms_default, topology_refresh_ms_default)
from chorusdb.client.token import ZERO, Token


def monotonic_ms() -> int:
    """The drivers' clock for the engine: milliseconds that never go back."""
    return int(time.monotonic() * 1000)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class ClientBase:
    """Options and session of a cluster-aware client; see the package docstring for the API."""

    def __init__(self, hosts: Sequence[str], *, read_from: ReadFrom | str = ReadFrom.LEADER,
                 session_token: str | None = None, max_staleness_ms: int | None = None,
                 max_lag_entries: int | None = None,
                 retry_deadline_ms: int = retry_deadline_ms_default,
                 session_wait_ms: int = session_wait_ms_default,
                 topology_refresh_ms: int = topology_refresh_ms_default,
                 socket_timeout_ms: int = socket_timeout_ms_default,
                 socket_connect_timeout_ms: int = socket_connect_timeout_ms_default,
                 request_ids: RequestIds | str = RequestIds.NON_IDEMPOTENT,
                 password: str | None = None, username: str | None = None, protocol: int = 2,
                 decode_responses: bool = False, encoding: str = "utf-8",
                 encoding_errors: str = "strict", rng: random.Random | None = None) -> None:
        settings = ClientSettings(retry_deadline_ms=retry_deadline_ms,
                                  session_wait_ms=session_wait_ms,
                                  topology_refresh_ms=topology_refresh_ms,
                                  socket_timeout_ms=socket_timeout_ms,
                                  socket_connect_timeout_ms=socket_connect_timeout_ms,
                                  request_ids=RequestIds(request_ids))
        token = ZERO if session_token is None else Token.parse(session_token)
        self._state = ClusterState(list(hosts) if not isinstance(hosts, str) else hosts,
                                   settings, token, rng)
        self._read_options = ReadOptions(ReadFrom(read_from), max_staleness_ms, max_lag_entries)
        self._encoder = Encoder(encoding, encoding_errors, decode_responses)
        self._pool_kwargs = {
            "password": password, "username": username, "protocol": protocol,
            "decode_responses": decode_responses, "encoding": encoding,
            "encoding_errors": encoding_errors,
            "socket_timeout": socket_timeout_ms / 1000,
            "socket_connect_timeout": socket_connect_timeout_ms / 1000,
            "max_connections": connections_per_member_max,
        }

    # --- the session ---

    @property
    def session_token(self) -> str:
        """The session token, ``"epoch:index"``: hand it to another client (``session_token=``)
        to continue this session there."""
        return str(self._state.token)

    def advance_session(self, session_token: str) -> None:
        """Raise the session token to ``session_token`` if that is newer (from a cookie, say);
        never lowers it."""
        self._state.observe_token(session_token)

    @property
    def read_options(self) -> ReadOptions:
        return self._read_options

    def reading(self, read_from: ReadFrom | str | None = None,
                max_staleness_ms: int | None = None,
                max_lag_entries: int | None = None) -> Self:
        """A view of this client that reads with other options (None: keep this client's). It
        shares the connections, the topology and the session token, so
        ``client.reading(read_from="follower", max_staleness_ms=200).get("k")`` reads within
        200 ms of the leader and still sees the client's own writes. Closing a view closes the
        client."""
        view = copy.copy(self)
        view._read_options = self._read_options.with_changes(read_from, max_staleness_ms,
                                                             max_lag_entries)
        return view

    # --- for the drivers and redis-py's command mixins ---

    def get_encoder(self) -> Encoder:
        """The encoder redis-py's command methods use for arguments they encode themselves."""
        return self._encoder

    def _new_call(self, args: Sequence[object], options: dict[str, object],
                  now_ms: int) -> Call:
        return Call(self._state, args, options, self._read_options, now_ms)

    def _member_pool_kwargs(self, address: str) -> dict[str, object]:
        host, port = split_address(address)
        return {"host": host, "port": port, **self._pool_kwargs}

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} seeds={list(self._state.seeds)} "
                f"read_from={self._read_options.read_from.value} "
                f"session_token={self.session_token}>")
