"""asyncio plumbing between nodes: the authenticated peer links of leader mode.

- ``protocol``: the peer vocabulary — every type that travels between nodes and its stable wire
  tag (``PEER_TYPE_TAGS``, ``PEER_CODEC``), the handshake messages and proofs, ``thaw_reply``.
- ``peers``: ``PeerNetwork``, which dials every peer, accepts their connections, authenticates
  both ends, sends with bounded queues, reconnects with backoff and hands every received
  message to the driver.

It moves bytes and typed messages and makes no protocol decision: what to send, and what a lost
message means, is the core's business (it retransmits on its own timers).
"""
