"""Fuzzing the wire parsers with seeded random input: they answer, they never crash.

RESP: 12,000 generated streams — valid commands, inline lines, RESP fragments of every type,
mutated bytes, limits small enough to be hit — each fed in a random chunking to the parser with
the hiredis accelerator and to the exact parser alone. Both must produce only commands (non-empty
lists of bytes), ``NEED_DATA`` or a ``ProtocolError``, keep ``buffered_bytes`` within the bound
whenever they wait for data, and agree event for event.

Frames: 10,000 streams of valid frames, garbage, truncations and bit flips: ``FrameDecoder``
returns messages or raises ``FrameError``, nothing else, and valid streams decode exactly.

Every failure message carries the seed and the case number that reproduce it.
"""

from __future__ import annotations

import random
import struct

import msgpack
import pytest

from chorusdb.core import model
from chorusdb.wire.codec import DataclassCodec
from chorusdb.wire.frames import FrameDecoder, FrameError, encode_frame
from chorusdb.wire.resp import NEED_DATA, ProtocolError, RespParser, encode_command

SEED = 20240611
RESP_CASES = 12_000
FRAME_CASES = 10_000

FRAGMENTS = [
    b"*", b"$", b"\r\n", b"\r", b"\n", b"+", b":", b"-", b"=", b"(", b">", b"~", b"|", b"%",
    b"_", b"#", b",", b"!", b"0", b"1", b"3", b"10", b"-1", b"99", b"1234567", b"99999999",
    b" ", b'"', b"'", b"\\", b"\\x4", b"\\x41", b"\\n", b"\x00", b"\t", b"\x0b", b"SET", b"a",
    b"\xff",
]
ARGUMENTS = [b"", b"a", b"SET", b"+x", b"a=b", b"*1234567", b"$-1", b"\r\n", b"x\x00y", b"\xfe\xff"]
SMALL_LIMITS = dict(bulk_bytes_max=10, args_max=3, inline_bytes_max=16, buffer_bytes_max=40)


def generate_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if kind < 0.45:
            arguments = [
                rng.choice(ARGUMENTS) if rng.random() < 0.7 else rng.randbytes(rng.randint(0, 14))
                for _ in range(rng.randint(0, 4))
            ]
            parts.append(encode_command(arguments))
        elif kind < 0.65:
            words = [rng.choice([b"get", b'"a b"', b"'c'", b'"\\x41"', b"x", b'"\\"']) for _ in range(rng.randint(0, 3))]
            parts.append(b" ".join(words) + rng.choice([b"\r\n", b"\n"]))
        else:
            parts.append(b"".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12))))
    stream = bytearray(b"".join(parts))
    for _ in range(rng.choice([0, 0, 1, 3])):
        if stream:
            stream[rng.randrange(len(stream))] = rng.randrange(256)
    if rng.random() < 0.2:
        del stream[rng.randint(0, len(stream)) :]
    return bytes(stream)


def events_of(stream: bytes, cuts: list[int], max_count: int, options: dict, where: str) -> list:
    parser = RespParser(**options)
    events: list = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        parser.receive_data(stream[start:end])
        while True:
            commands, error = parser.next_events(max_count)
            assert len(commands) <= max_count, where
            for command in commands:
                assert type(command) is list and command, where
                assert all(type(argument) is bytes for argument in command), where
            events.extend(commands)
            if error is not None:
                assert type(error) is ProtocolError and error.message, where
                assert parser.next_event() == error, where
                return [*events, error]
            if len(commands) < max_count:
                break
        assert parser.buffered_bytes <= options.get("buffer_bytes_max", 2**62), where
        assert parser.next_event() is NEED_DATA, where
    return events


def test_resp_parser_on_random_streams() -> None:
    rng = random.Random(SEED)
    for case in range(RESP_CASES):
        stream = generate_stream(rng)
        cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream) + 1, rng.randint(0, 5))))
        max_count = rng.choice([1, 2, 4096])
        options = rng.choice([{}, SMALL_LIMITS])
        where = f"seed={SEED} case={case} stream={stream!r} cuts={cuts} max_count={max_count} {options}"
        accelerated = events_of(stream, cuts, max_count, options, where)
        exact = events_of(stream, cuts, max_count, dict(options, use_hiredis=False), where)
        assert accelerated == exact, where


CODEC = DataclassCodec({1: model.Position, 3: model.SetValue, 4: model.PushItems, 8: model.FlushAll, 9: model.LogEntry})


def random_message(rng: random.Random) -> object:
    position = model.Position(rng.randrange(2**32), rng.randrange(2**62))
    return rng.choice(
        [
            position,
            model.FlushAll(),
            model.LogEntry(position, model.SetValue(rng.randbytes(rng.randint(0, 8)), rng.randbytes(rng.randint(0, 40)), 0)),
            model.LogEntry(position, model.PushItems(b"k", tuple(rng.randbytes(3) for _ in range(rng.randint(0, 4))), rng.random() < 0.5)),
        ]
    )


def decode_stream(stream: bytes, cuts: list[int], frame_bytes_max: int) -> tuple[list, FrameError | None]:
    decoder = FrameDecoder(CODEC, frame_bytes_max=frame_bytes_max)
    messages: list = []
    try:
        for start, end in zip([0, *cuts], [*cuts, len(stream)]):
            decoder.receive_data(stream[start:end])
            while (message := decoder.next_frame()) is not NEED_DATA:
                messages.append(message)
            assert decoder.buffered_bytes < 4 + frame_bytes_max
    except FrameError as error:
        return messages, error
    return messages, None


def test_frame_decoder_on_random_streams() -> None:
    rng = random.Random(SEED)
    for case in range(FRAME_CASES):
        messages = [random_message(rng) for _ in range(rng.randint(0, 4))]
        stream = bytearray(b"".join(encode_frame(CODEC, message) for message in messages))
        damage = rng.choice(["none", "flip", "garbage", "truncate", "envelope"])
        if damage == "flip" and stream:
            for _ in range(rng.randint(1, 4)):
                stream[rng.randrange(len(stream))] ^= 1 << rng.randrange(8)
        elif damage == "garbage":
            stream[rng.randint(0, len(stream)) :] = rng.randbytes(rng.randint(1, 64))
        elif damage == "truncate":
            del stream[rng.randint(0, len(stream)) :]
        elif damage == "envelope":
            body = msgpack.packb([rng.randrange(-3, 300), rng.choice([None, b"x", [1], {}, msgpack.ExtType(rng.randrange(128), b"")])])
            stream += struct.pack(">I", len(body)) + body
        stream = bytes(stream)
        cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream) + 1, rng.randint(0, 4))))
        frame_bytes_max = rng.choice([40, 1 << 20])
        where = f"seed={SEED} case={case} damage={damage} stream={stream!r} cuts={cuts}"
        try:
            decoded, error = decode_stream(stream, cuts, frame_bytes_max)
        except Exception as unexpected:  # the property under test: nothing but FrameError
            pytest.fail(f"{type(unexpected).__name__}: {unexpected} {where}")
        if damage == "none":
            oversized = any(len(encode_frame(CODEC, message)) - 4 > frame_bytes_max for message in messages)
            assert (error is not None) == oversized, where
            if error is None:
                assert decoded == messages, where
