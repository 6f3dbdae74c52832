"""``chorusdb chaos``: a real local cluster under real faults, judged by the simulator's checkers.

The simulator proves the cores in virtual time; this proves the whole program — sockets,
SQLite, timers, the driver, the CLI — the way Jepsen does. ``cluster`` starts real ``chorusdb
serve`` processes on loopback, every directed peer link through its own TCP proxy
(``proxy``) whose mode flips at run time; ``nemesis`` partitions, kills, pauses, restarts and
skews them; ``workload`` runs redis-py clients that record a history in the simulator's
format; ``report`` judges it with ``verify``; ``run`` holds the phases together (warm-up,
faults, heal, quiesce, final reads, verdict) and keeps the evidence when a run fails.
"""
