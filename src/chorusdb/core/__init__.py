"""Sans-I/O replication cores: one class per mode behind one interface (see ``api``).

Nothing in this package does I/O, reads a clock or uses module-level randomness: time comes in as
``now_ms`` and randomness as a seeded ``random.Random``, so a run replays from its inputs.
"""
