"""Peer frames: how replication and control messages travel between nodes.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of body::

    +----------------+-------------------------------------------------------+
    | u32 length (BE)| msgpack [peer_protocol_version, message]               |
    +----------------+-------------------------------------------------------+

The body is a two-element msgpack array: the sender's ``limits.peer_protocol_version`` and the
message, a registered frozen dataclass encoded by ``DataclassCodec`` (so on the wire it is
``[ext(tag), field, ...]``; see ``chorusdb.wire.codec``). The length counts the body only and is
bounded by ``limits.frame_bytes_max``.

Every message carries the version, not only the first one, so a frame is self-describing: a
node that meets a frame of another version refuses it with a clear error instead of guessing
at fields. Rolling upgrades that change the message set bump the version.

The handshake (cluster id, node id, protocol version, and an HMAC over the peer's challenge with
the cluster secret) is an ordinary message in this framing; its dataclasses and the exchange
belong to the layer that opens connections (net/server), which also decides what a failed
handshake costs. This module only moves typed messages in and out of bytes.

``FrameDecoder`` is sans-I/O in the style of h11: feed it whatever bytes arrived
(``receive_data``) and pull complete messages (``next_frame``) until it answers ``NEED_DATA``.
It rejects an oversized frame as soon as the 4-byte header is in, before buffering any of its
body, and raises ``FrameError`` for an unsupported version, an unknown tag or a malformed body.
After an error the connection is unusable (the stream position is lost): close it.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import NoReturn

import msgpack

from chorusdb import limits
from chorusdb.wire.codec import CodecError, DataclassCodec
from chorusdb.wire.resp import NEED_DATA, NeedData

_header = struct.Struct(">I")
assert _header.size == limits.frame_header_bytes
# What every body of this version starts with: a msgpack fixarray of 2, then the version.
_body_prefix = b"\x92" + msgpack.packb(limits.peer_protocol_version)


class FrameError(CodecError):
    """The peer sent a frame this node cannot accept; close the connection."""


def encode_frame(
    codec: DataclassCodec, message: object, *, frame_bytes_max: int = limits.frame_bytes_max
) -> bytes:
    """The frame carrying ``message`` (a dataclass registered with ``codec``)."""
    assert dataclasses.is_dataclass(message) and not isinstance(message, type), message
    body = _body_prefix + codec.encode(message)
    if len(body) > frame_bytes_max:
        raise FrameError(f"{type(message).__name__} frame of {len(body)} bytes > {frame_bytes_max}")
    return _header.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frames and decodes their messages."""

    __slots__ = ("_codec", "_frame_bytes_max", "_buffer", "_body_length", "_error")

    def __init__(
        self, codec: DataclassCodec, frame_bytes_max: int = limits.frame_bytes_max
    ) -> None:
        self._codec = codec
        self._frame_bytes_max = frame_bytes_max
        self._buffer = bytearray()
        self._body_length = -1  # of the frame at the front of the buffer, once its header is in
        self._error: FrameError | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Buffer ``data``; raises ``FrameError`` at once if it completes an oversized header."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        if self._body_length < 0:
            self._read_header()

    def next_frame(self) -> object | NeedData:
        """The next complete message, or ``NEED_DATA``."""
        if self._error is not None:
            raise self._error
        if self._body_length < 0 and not self._read_header():
            return NEED_DATA
        end = limits.frame_header_bytes + self._body_length
        if len(self._buffer) < end:
            return NEED_DATA
        body = bytes(self._buffer[limits.frame_header_bytes : end])
        del self._buffer[:end]  # cheap: CPython moves a bytearray's start instead of copying
        self._body_length = -1
        return self._decode_body(body)

    def _read_header(self) -> bool:
        """Read the length of the frame at the front, if its header is in; check its bound."""
        if len(self._buffer) < limits.frame_header_bytes:
            return False
        (length,) = _header.unpack_from(self._buffer)
        if length > self._frame_bytes_max:
            self._fail(f"frame of {length} bytes > {self._frame_bytes_max}")
        self._body_length = length
        return True

    def _decode_body(self, body: bytes) -> object:
        if not body.startswith(_body_prefix):
            self._fail(_describe_foreign_body(body))
        try:
            message = self._codec.decode(memoryview(body)[len(_body_prefix) :])
        except CodecError as error:
            self._fail(f"bad message: {error}")
        if not dataclasses.is_dataclass(message):
            self._fail(f"frame carries a {type(message).__name__}, not a message")
        return message

    def _fail(self, reason: str) -> NoReturn:
        self._error = FrameError(reason)
        raise self._error


def _describe_foreign_body(body: bytes) -> str:
    """Why a body that does not start like ours was refused: another version, or garbage."""
    try:
        envelope = msgpack.unpackb(body, use_list=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return "malformed frame body"
    if (
        type(envelope) is tuple
        and len(envelope) == 2
        and type(envelope[0]) is int
        and envelope[0] != limits.peer_protocol_version
    ):
        return (
            f"unsupported peer protocol version {envelope[0]} "
            f"(this node speaks {limits.peer_protocol_version})"
        )
    return "malformed frame body"
