"""The session token: a log position ``epoch:index`` that names the newest state a session saw.

A node answers ``CHORUS.TOKEN`` with the highest of its applied position and the position of the
connection's last write, once every earlier command on the connection has been answered. So the
token read after a read is at least the state that read saw, and the token read after a write is
at least that write's position. The client keeps the highest token it was ever given and sends
it in ``CHORUS.WAITPOS`` before each read: the node answering the read must have applied it
first. That one rule gives the session its guarantees on any member, across follower switches
and failovers:

- read-your-writes: a write's token is at most the session token, so every later read waits for
  a state that contains the write;
- monotonic reads: a read's token is at most the session token, so no later read sees an older
  state;
- consistent prefix: every member applies one ordered log, so a state is a prefix of it.

Positions compare as the tuple ``(epoch, index)``: a new leader's entries (``6:3``) follow every
entry of an earlier epoch (``5:900``), however long that epoch's log was. A token is plain text so
a web application can keep it in a cookie and hand it to another client (``session_token=``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Token:
    """A log position; ordered as ``(epoch, index)``."""

    epoch: int
    index: int

    def __post_init__(self) -> None:
        if self.epoch < 0 or self.index < 0:
            raise ValueError(f"a session token is two numbers >= 0, not {self.epoch}:{self.index}")

    @classmethod
    def parse(cls, text: str | bytes) -> Token:
        """``"epoch:index"`` (str or bytes, as a node answers it) as a Token; ValueError on any
        other text."""
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        epoch, separator, index = text.partition(":")
        if not separator or not epoch.isdigit() or not index.isdigit():
            raise ValueError(f"a session token is 'epoch:index', not {text!r}")
        return cls(int(epoch), int(index))

    def __str__(self) -> str:
        return f"{self.epoch}:{self.index}"


ZERO = Token(0, 0)
"""The token of a session that has seen nothing: every node has applied it."""
