"""Durable storage: what a node keeps on disk, and the thread that writes it.

A node keeps its data in memory (the core's keyspace) and durably in its store: a data table
(one row per key), the replication log (positions, logical effects, a CRC32C per entry) and node
metadata. The core hands the driver lists of writes (``core.model.Write``); the store applies
each list in order in one transaction, so a data change and the log entry that explains it
commit together. At start the store is read back into a ``RecoveredState``.

- ``base`` — the ``Store`` protocol and its rules (atomicity, durability levels, log bounds,
  snapshots), ``Snapshot``, and the checks both stores run on every write.
- ``encoding`` — the byte formats: record values, log entries with their CRC32C, the in-memory
  store's transaction records, and the stable type tags they use (an on-disk format).
- ``sqlite_store`` — ``SqliteStore``: SQLite in WAL mode, ``synchronous=FULL`` or ``NORMAL``
  by durability, group commits in one transaction, snapshots into tagged files.
- ``memory_store`` — ``MemoryStore``: the same contract in memory, plus a model of a disk
  (written vs synced records, process crash, power loss, torn records) for the simulator.
- ``thread`` — ``StorageThread``: the one thread that owns a store in the server; the event
  loop submits batches and gets futures back, and batches that queue up are committed together.

Modules here import ``core`` and ``wire`` (for the codec), never the server or the simulator.
"""
