"""ChorusDB: a replicated key-value and event store on SQLite that speaks the Redis protocol.

Layers, lowest first (a test enforces that no layer imports a higher one):

    limits  <-  core, wire  <-  storage, net, client  <-  server, sim, verify  <-  cli

``core`` and ``wire`` are sans-I/O: they never touch sockets, files, clocks or global randomness,
so the deterministic simulator and the real server drive the very same classes.

``chorusdb.Client``, ``chorusdb.AsyncClient`` and ``chorusdb.ClusterUnavailableError`` are the
cluster-aware client (``chorusdb.client``), loaded on first use so that importing any layer
does not load redis-py.
"""

__version__ = "0.1.0"
CLIENT_NAMES = ("Client", "AsyncClient", "ClusterUnavailableError")


def __getattr__(name: str) -> object:
    if name in CLIENT_NAMES:
        import chorusdb.client
        return getattr(chorusdb.client, name)
    raise AttributeError(f"module 'chorusdb' has no attribute {name!r}")
