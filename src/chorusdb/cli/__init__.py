"""The ``chorusdb`` command line: serve, up, status, divergent, switchover, sim, chaos, bench."""
