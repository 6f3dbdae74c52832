"""``python -m chorusdb`` is the ``chorusdb`` command."""

from chorusdb.cli.main import main

raise SystemExit(main())
