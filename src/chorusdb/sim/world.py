"""The discrete-event scheduler every simulated part runs on, with the run's randomness and trace.

A ``World`` owns virtual time (integer microseconds, starting at 0), a heap of pending events and
one independent random stream per subsystem. An event is ``(time_us, sequence, action, args)``:
the sequence number breaks ties in scheduling order, so two events at the same instant always run
in the same order and the heap never compares the actions themselves.

Randomness: every stream is a ``random.Random`` seeded with the text
``"chorusdb-sim/<seed>/<name>"`` (string seeds go through SHA-512, independent of
``PYTHONHASHSEED``). Streams are independent, so drawing one more number for the network does
not shift what the disk or the workload draw: a change in one subsystem leaves the others'
choices, and most of a seed's shape, as they were.

The trace hash is a BLAKE2b over one short line per notable event (``time kind subject
detail``), updated as the run goes: two runs of the same seed must produce the same hash, which
is how the determinism test catches a leak (set iteration, ``id()``, a real clock).

Probes count how often rare paths ran, in first-seen order; cores report theirs through
``Probe`` notes and the simulator adds its own (crash, power loss, torn record, ...).
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable

STREAM_NAMES = ("network", "disk", "clocks", "faults", "workload", "params")

trace_digest_bytes = 16


class EventBudgetExceeded(Exception):
    """The run scheduled more events than its budget allows: something spins in virtual time."""


class World:
    """Virtual time, the event heap, the random streams, the trace hash and probe counts."""

    def __init__(self, seed: int, events_max: int) -> None:
        self.seed = seed
        self.now_us = 0
        self.events_run = 0
        self.events_max = events_max
        self.streams = {name: self.stream(name) for name in STREAM_NAMES}
        self.probes: dict[str, int] = {}
        self._queue: list[tuple[int, int, Callable[..., None], tuple[object, ...]]] = []
        self._sequence = 0
        self._trace = hashlib.blake2b(digest_size=trace_digest_bytes)

    def stream(self, name: str) -> random.Random:
        """A random stream of its own for ``name`` (e.g. one per node incarnation's core)."""
        return random.Random(f"chorusdb-sim/{self.seed}/{name}")

    # --- scheduling ---------------------------------------------------------------------------

    def at(self, time_us: int, action: Callable[..., None], *args: object) -> None:
        assert time_us >= self.now_us, f"event scheduled in the past: {time_us} < {self.now_us}"
        self._sequence += 1
        heapq.heappush(self._queue, (time_us, self._sequence, action, args))

    def after(self, delay_us: int, action: Callable[..., None], *args: object) -> None:
        self.at(self.now_us + max(0, delay_us), action, *args)

    def run_until(self, time_us: int, done: Callable[[], bool] | None = None) -> None:
        """Run events up to ``time_us`` (inclusive), stopping early once ``done()`` holds;
        virtual time ends at ``time_us`` unless stopped early."""
        queue = self._queue
        while queue and queue[0][0] <= time_us:
            if done is not None and done():
                return
            event_time_us, _, action, args = heapq.heappop(queue)
            self.now_us = event_time_us
            self.events_run += 1
            if self.events_run > self.events_max:
                raise EventBudgetExceeded(f"more than {self.events_max} events")
            action(*args)
        if done is None or not done():
            self.now_us = max(self.now_us, time_us)

    # --- observation --------------------------------------------------------------------------

    def trace(self, kind: str, subject: str, detail: object = "") -> None:
        self._trace.update(f"{self.now_us} {kind} {subject} {detail}\n".encode())

    def trace_hash(self) -> str:
        return self._trace.hexdigest()

    def probe(self, name: str, count: int = 1) -> None:
        self.probes[name] = self.probes.get(name, 0) + count
