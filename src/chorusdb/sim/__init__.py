"""The deterministic simulator: whole clusters of real cores in one thread, on virtual time.

One seed drives everything (FoundationDB's simulator, TigerBeetle's VOPR): the nodes are the
production core classes (``core.modes.core_class(mode)``) over the in-memory store
(``storage.memory_store.MemoryStore``, which models the page cache, fsync, power loss and torn
records); the network, the disks, the clocks, the faults and the clients are simulated. Any
failure replays exactly from ``(mode, durability, seed, bug)``: ``chorusdb sim --seed S ...``.

Modules, bottom up:

- ``world``: the event heap, virtual time, per-subsystem random streams, trace hash, probes;
- ``clock``: per-node wall clocks with skew, drift, jumps and the never-backwards clamp;
- ``network``: directed links that delay, drop, duplicate and reorder; partitions;
- ``node``: the node driver, the simulator's copy of the server's ``Ready`` loop (persist,
  then send, reply, note, advance), with pause, crash and restart;
- ``workload``: Jepsen-style client workers with unique values, rotating keys and timeouts;
- ``params``: the run's settings (``SimConfig``) and what each seed draws (``SeedParams``);
- ``nemesis``: the fault schedule and heal;
- ``invariants``: white-box checks after every ``Ready``, crash and restart;
- ``runner``: one seed from start to verdict (``run_seed``), with ``verify``'s checkers;
- ``command``: ``chorusdb sim`` / ``python -m chorusdb.sim``.

What a core must offer to plug in (nothing else of it is used): the ``core.api`` contract,
``mode`` and ``KNOWN_BUGS`` on its class, peer messages that name their destination node in a
``target`` attribute, ``status()`` with ``position`` and ``commit_position`` as
``{"epoch", "index"}``, and optionally ``CLAIMS`` on its class (the ``verify.check`` claims it
promises; the strongest set when absent). Rare paths are marked with ``Probe(name)`` notes.
"""
