"""Peer frames: round trips at every split, and every way a frame is refused."""

from __future__ import annotations

import struct

import msgpack
import pytest

from chorusdb import limits
from chorusdb.core import model
from chorusdb.wire.codec import CodecError, DataclassCodec
from chorusdb.wire.frames import FrameDecoder, FrameError, encode_frame
from chorusdb.wire.resp import NEED_DATA

codec = DataclassCodec({1: model.Position, 3: model.SetValue, 8: model.FlushAll, 9: model.LogEntry})
MESSAGES = [
    model.LogEntry(model.Position(3, 7), model.SetValue(b"k\x00\xff", b"v" * 300, 0)),
    model.FlushAll(),
    model.Position(2**40, 2**62),
]


def frame_with_body(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_frame_layout_is_length_then_version_and_message() -> None:
    frame = encode_frame(codec, model.Position(3, 7))
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    version, message = msgpack.unpackb(frame[4:], ext_hook=lambda code, data: code)
    assert version == limits.peer_protocol_version
    assert message == [1, 3, 7]  # [tag of Position, fields...]


def test_stream_of_frames_decodes_at_every_split_point() -> None:
    stream = b"".join(encode_frame(codec, message) for message in MESSAGES)
    for split in range(len(stream) + 1):
        decoder = FrameDecoder(codec)
        decoded = []
        for part in (stream[:split], stream[split:]):
            decoder.receive_data(part)
            while (message := decoder.next_frame()) is not NEED_DATA:
                decoded.append(message)
        assert decoded == MESSAGES, split
        assert decoder.buffered_bytes == 0


def test_byte_by_byte_feeding() -> None:
    decoder = FrameDecoder(codec)
    decoded = []
    for byte in b"".join(encode_frame(codec, message) for message in MESSAGES):
        decoder.receive_data(bytes([byte]))
        while (message := decoder.next_frame()) is not NEED_DATA:
            decoded.append(message)
    assert decoded == MESSAGES


def test_oversized_length_is_refused_as_soon_as_the_header_is_in() -> None:
    decoder = FrameDecoder(codec, frame_bytes_max=100)
    decoder.receive_data(struct.pack(">I", 101)[:3])
    assert decoder.next_frame() is NEED_DATA
    with pytest.raises(FrameError, match="101 bytes > 100"):
        decoder.receive_data(struct.pack(">I", 101)[3:])
    # The decoder stays failed: the stream position is lost.
    with pytest.raises(FrameError):
        decoder.next_frame()
    with pytest.raises(FrameError):
        decoder.receive_data(b"more")


def test_oversized_frame_after_a_good_one_is_refused_by_next_frame() -> None:
    decoder = FrameDecoder(codec, frame_bytes_max=100)
    decoder.receive_data(encode_frame(codec, model.FlushAll()) + struct.pack(">I", 2**32 - 1))
    assert decoder.next_frame() == model.FlushAll()
    with pytest.raises(FrameError, match="4294967295 bytes"):
        decoder.next_frame()


def test_encode_frame_refuses_a_message_over_the_bound() -> None:
    with pytest.raises(FrameError, match="SetValue frame"):
        encode_frame(codec, model.SetValue(b"k", b"x" * 200, 0), frame_bytes_max=100)


def test_unsupported_version_is_named() -> None:
    body = msgpack.packb([limits.peer_protocol_version + 1, [msgpack.ExtType(1, b""), 1, 2]])
    decoder = FrameDecoder(codec)
    decoder.receive_data(frame_with_body(body))
    with pytest.raises(FrameError, match=f"unsupported peer protocol version {limits.peer_protocol_version + 1}"):
        decoder.next_frame()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (msgpack.packb([limits.peer_protocol_version, [msgpack.ExtType(77, b""), 1]]), "unknown tag 77"),
        (msgpack.packb([limits.peer_protocol_version, [msgpack.ExtType(1, b""), 1]]), "Position"),
        (msgpack.packb([limits.peer_protocol_version, b"not a message"]), "not a message"),
        (msgpack.packb([limits.peer_protocol_version, 1, 2]), "malformed"),
        (b"\xc1\xc1", "malformed"),
        (b"", "malformed"),
        (msgpack.packb([limits.peer_protocol_version, [msgpack.ExtType(1, b""), 1, 2]])[:-1], "bad message"),
    ],
)
def test_bad_bodies_are_refused(body: bytes, reason: str) -> None:
    decoder = FrameDecoder(codec)
    decoder.receive_data(frame_with_body(body))
    with pytest.raises(FrameError, match=reason):
        decoder.next_frame()


def test_frame_error_is_a_codec_error() -> None:
    assert issubclass(FrameError, CodecError)
