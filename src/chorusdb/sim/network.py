"""The simulated network: directed links that delay, drop, duplicate and reorder, and partitions.

Endpoints are names: nodes (``n1``...) and client workers (``c1``...). Every directed link
``(source, target)`` has its own ``LinkFaults``: a drop probability, a duplicate probability and a
delay of ``delay_us_min`` plus an exponential part with mean ``delay_us_mean``. Each copy of a
message draws its own delay, so messages on one link overtake each other: the model is harsher
than TCP (which keeps order per connection) on purpose, because reconnects and retries produce
the same duplicates and reorderings at the message level, and the cores must survive them.

A partition is a set of blocked directed links. A message is dropped when its link is blocked at
send time or at delivery time (a partition also swallows what was in flight). Asymmetric
partitions block one direction only. A message on its way to a process that died meanwhile is
dropped too (``reset``): its connections died with it.

A peer link may also **corrupt** a checksummed payload (a message with a ``data`` bytes field,
such as a snapshot chunk, whose checksum travels beside it): one byte of the copy is flipped.
TCP's 16-bit checksum lets such damage through now and then, and memory or a disk on the way
can do the same; the receiver's own check must catch it.

Client links (client worker <-> node) carry whole requests and replies. They are never given a
duplicate probability: a TCP connection does not replay a request, and a client retry is a new
operation in the history, not a duplicate delivery.

Everything random comes from the world's ``network`` stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from chorusdb.sim.world import World


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """How one directed link misbehaves."""

    drop_probability: float
    duplicate_probability: float
    delay_us_min: int
    delay_us_mean: int
    corrupt_probability: float = 0.0


Receive = Callable[[str, object], None]
"""An endpoint's handler: ``receive(source, payload)``."""


class Network:
    """Directed links between named endpoints; see the module docstring."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rng = world.streams["network"]
        self.blocked: set[tuple[str, str]] = set()
        self._endpoints: dict[str, Receive] = {}
        self._incarnations: dict[str, int] = {}
        self._base: dict[tuple[str, str], LinkFaults] = {}
        self._override: dict[tuple[str, str], LinkFaults] = {}
        self.dropped = 0
        self.duplicated = 0
        self.corrupted = 0

    def attach(self, endpoint: str, receive: Receive) -> None:
        """Name an endpoint and the handler its deliveries go to."""
        self._endpoints[endpoint] = receive

    def reset(self, endpoint: str) -> None:
        """The endpoint's process died: what is still on its way to it is lost with its
        connections (what it sent before dying still arrives: the kernel had it)."""
        self._incarnations[endpoint] = self._incarnations.get(endpoint, 0) + 1

    def set_link(self, source: str, target: str, faults: LinkFaults) -> None:
        """The link's normal behaviour (what heal returns it to)."""
        self._base[source, target] = faults

    def disturb(self, source: str, target: str, faults: LinkFaults) -> None:
        """Make the link misbehave as ``faults`` until ``calm`` (a network storm)."""
        self._override[source, target] = faults

    def calm(self, source: str, target: str) -> None:
        self._override.pop((source, target), None)

    def heal(self) -> None:
        """Clear partitions and storms; links keep their normal behaviour."""
        self.blocked.clear()
        self._override.clear()

    def send(self, source: str, target: str, payload: object) -> None:
        """Send ``payload``; the target's ``receive(source, payload)`` runs for every copy that
        arrives."""
        link = (source, target)
        if link in self.blocked:
            self._drop(source, target, "blocked")
            return
        faults = self._override.get(link) or self._base[link]
        rng = self.rng
        if faults.drop_probability and rng.random() < faults.drop_probability:
            self._drop(source, target, "lost")
            return
        copies = 1
        if faults.duplicate_probability and rng.random() < faults.duplicate_probability:
            copies = 2
            self.duplicated += 1
        if faults.corrupt_probability and isinstance(getattr(payload, "data", None), bytes) \
                and payload.data and rng.random() < faults.corrupt_probability:
            data = bytearray(payload.data)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            payload = replace(payload, data=bytes(data))
            self.corrupted += 1
        for copy in range(copies):
            delay_us = faults.delay_us_min
            if faults.delay_us_mean:
                delay_us += int(rng.expovariate(1.0 / faults.delay_us_mean))
            self.world.after(delay_us, self._arrive, source, target, payload, copy,
                             self._incarnations.get(target, 0))

    def _arrive(self, source: str, target: str, payload: object, copy: int,
                incarnation: int) -> None:
        if (source, target) in self.blocked:
            self._drop(source, target, "blocked in flight")
            return
        if incarnation != self._incarnations.get(target, 0):
            self._drop(source, target, "target restarted")
            return
        if copy:
            self.world.probe("duplicate_delivery")
        self._endpoints[target](source, payload)

    def _drop(self, source: str, target: str, why: str) -> None:
        self.dropped += 1
        self.world.probe("message_dropped")
        self.world.trace("drop", f"{source}>{target}", why)
