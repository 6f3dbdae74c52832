"""The client's own errors. They subclass redis-py's, so code written for redis-py catches them."""

from __future__ import annotations

from redis.exceptions import ConnectionError


class ClusterUnavailableError(ConnectionError):
    """A call that could not be completed before its retry deadline. The message names the
    command, how many attempts were made in how long, and the newest failures (member address
    and what it answered or how it failed). Raised only for failures that were retried, so
    whether a write was applied is unknown unless every failure said "nothing applied"."""
