"""ChorusDB: a replicated key-value and event store on SQLite that speaks the Redis protocol.

Layers, lowest first (a test enforces that no layer imports a higher one):

    limits  <-  core, wire  <-  storage, net, client  <-  server, sim, verify  <-  cli

``core`` and ``wire`` are sans-I/O: they never touch sockets, files, clocks or global randomness,
so the deterministic simulator and the real server drive the very same classes.
"""

__version__ = "0.1.0"
