"""``python -m chorusdb.sim``: the simulator's command line (see ``sim.command``)."""

import sys

from chorusdb.sim.command import main

sys.exit(main())
