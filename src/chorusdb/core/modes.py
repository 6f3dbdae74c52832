"""The registry of replication modes: the one place that maps a mode name to its core class.

Drivers (the server, the simulator) look the class up here and then use only the interface in
``core.api``, so a new mode plugs in by adding one line.
"""

from __future__ import annotations

from chorusdb.core.api import Core
from chorusdb.core.leader import LeaderCore
from chorusdb.core.multileader import MultiLeaderCore
from chorusdb.core.standalone import StandaloneCore

CORES: dict[str, type[Core]] = {
    StandaloneCore.mode: StandaloneCore,
    LeaderCore.mode: LeaderCore,
    MultiLeaderCore.mode: MultiLeaderCore,
}


def core_class(mode: str) -> type[Core]:
    try:
        return CORES[mode]
    except KeyError:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(sorted(CORES))}") from None
