"""The cluster-aware Python client built on redis-py: routing, session guarantees, retries.

    from chorusdb.client import Client
    client = Client(["127.0.0.1:7001", "127.0.0.1:7002"], read_from="follower")
    client.set("user:1", "ada")
    client.get("user:1")              # from a follower, and still b"ada": read-your-writes
    cookie = client.session_token     # "epoch:index"; Client(..., session_token=cookie) elsewhere

    async with AsyncClient([...]) as client:   # the same options, awaited
        await client.incr("visits")

``Client`` (threads) and ``AsyncClient`` (asyncio) have redis-py's command methods
(``set``, ``get``, ``incr``, ``rpush``, ``lrange``, ...) with redis-py's reply conversions.

Options (keywords; defaults in settings.py):

- ``hosts``: seeds, ``["host:port", ...]``; one reachable member is enough, the rest is learnt
  from ``CHORUS.TOPOLOGY`` (refreshed after every failure, else every ``topology_refresh_ms``).
- ``read_from``: ``"leader"`` (linearizable: the leader confirms it still leads before it
  answers), ``"follower"`` (followers in turn; the leader only when no follower can serve) or
  ``"any"`` (every member in turn). Writes always go to the leader; other commands (PING,
  INFO, ...) to the leader when known, else any member.
- ``session_token``: continue a session from its token (a cookie, another client).
- ``max_staleness_ms``, ``max_lag_entries``: bound how stale a member serving a read may be:
  at most this long since it last held all the leader had committed / this many committed
  entries behind. A member outside the bounds waits up to ``session_wait_ms`` to meet them,
  else the read goes to the leader.
- ``retry_deadline_ms``: how long one call may keep retrying through failovers before it raises
  ``ClusterUnavailableError`` (a ``redis.exceptions.ConnectionError``).
- ``request_ids``: ``"non_idempotent"`` (writes such as INCR and RPUSH go as
  ``CHORUS.ONCE <id> ...`` so a retry is applied once) or ``"all"`` (every write does). A write
  whose outcome is unknown is retried only with an id (retry.py): without one it raises.
- ``password``, ``username``, ``protocol``, ``decode_responses``, ``socket_timeout_ms``,
  ``socket_connect_timeout_ms`` as for redis-py (times in ms).

Session: ``client.session_token`` is the token to hand on; ``client.advance_session(token)``
raises it to a token learnt later (never lowers it).

Per-read options: ``client.reading(read_from=..., max_staleness_ms=..., max_lag_entries=...)``
returns a view that shares the client's connections, topology and session token and reads with
those options; e.g. ``client.reading(max_staleness_ms=100).get("k")``.

How it works: the session token (token.py) is the highest log position the session has seen;
every read is pipelined behind ``CHORUS.WAITPOS <token>`` so whichever member serves it has
applied at least that, and every command is followed by ``CHORUS.TOKEN`` to learn the new one —
read-your-writes, monotonic reads and consistent prefix on any member, across failovers. The
decisions (what to send where, what a failure means, when to retry) are made by the sans-I/O
engine (engine.py, with commands.py, retry.py, topology.py) which both drivers share; the
drivers (sync_client.py, async_client.py) only move bytes with redis-py, whose own retry is off.
"""

from chorusdb.client.async_client import AsyncClient
from chorusdb.client.commands import NON_IDEMPOTENT_COMMANDS, RequestIds
from chorusdb.client.errors import ClusterUnavailableError
from chorusdb.client.settings import ReadFrom, ReadOptions
from chorusdb.client.sync_client import Client
from chorusdb.client.token import Token

__all__ = ["AsyncClient", "Client", "ClusterUnavailableError", "NON_IDEMPOTENT_COMMANDS",
           "ReadFrom", "ReadOptions", "RequestIds", "Token"]
