"""The cluster-aware Python client built on redis-py (routing, session tokens, retries).

Empty until replication exists: a standalone node is used with plain redis-py.
"""
