"""asyncio plumbing between nodes: accept loops, peer connections, reconnect with backoff.

It moves bytes and typed events and makes no protocol decision. Empty while ChorusDB runs one
standalone node; peer links arrive with leader mode, framed by ``wire.frames``.
"""
