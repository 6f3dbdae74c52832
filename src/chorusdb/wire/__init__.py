"""Sans-I/O codecs: bytes in, typed values out, and back. No sockets, clocks or threads here.

- ``codec`` — ``DataclassCodec``: frozen dataclasses under stable numeric tags, as msgpack; the
  format of log entries on disk and of every peer message.
- ``frames`` — peer frames (``u32 length | msgpack [version, message]``): ``encode_frame`` and
  the incremental ``FrameDecoder``.
- ``resp`` — the client protocol: ``RespParser`` (h11-style: feed bytes, pull commands, with
  Redis's limits and error texts; hiredis accelerates it where that is provably safe) and
  ``encode_reply``/``encode_replies`` for RESP2 and RESP3.

This package imports only ``chorusdb.limits`` and ``chorusdb.replies``.
"""
