"""The node: the driver that runs a core over storage and sockets (``node``), the RESP front door
(``clients``, ``connection_commands``), configuration (``config``), the admin HTTP API
(``admin``) and metrics (``metrics``)."""
