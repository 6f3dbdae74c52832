"""The ``chorusdb`` command line: serve, up, status, sim, bench."""
