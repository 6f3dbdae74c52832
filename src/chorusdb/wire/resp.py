"""The RESP front door: a sans-I/O request parser and the reply encoder.

Parsing
=======

``RespParser`` is shaped like h11: the connection feeds it whatever bytes arrived
(``receive_data``) and pulls events: a command (a ``list`` of ``bytes`` arguments, name first,
exactly as sent), ``NEED_DATA``, or a ``ProtocolError``, after which the server answers
``-ERR Protocol error: <message>`` and closes the connection, as Redis does. The server's hot
path is ``next_events(max_count)``: every complete command of one ``data_received`` in one call.

It accepts what Redis accepts, with Redis's error texts: multibulk requests
(``*N\\r\\n$len\\r\\n...``), inline commands (any line that does not start with ``*``, split as
Redis's ``sdssplitargs`` splits it), pipelines mixing both, empty commands skipped, and
everything split at any byte. Arguments stay ``bytes`` (NUL and non-UTF-8 included).

Two parsers, one answer
-----------------------

``hiredis.Reader`` parses RESP in C about ten times faster than Python can walk the headers,
but it is a *reply* parser and must not see untrusted input unguarded:

- it allocates an array as soon as it reads its header: ``*1\\r\\n*2000000000\\r\\n`` makes it
  allocate 16 GB (and touch all of it on free), top level or nested;
- it accepts every RESP3 type where a request allows only bulk strings, and ``+x``, ``=3``
  (verbatim) and ``(1`` (big number) elements come back as ``bytes``, indistinguishable from
  bulk strings but of another length on the wire;
- it does not know the limits, so a 4 GB bulk length would simply be waited for.

So the parser runs an exact Python parser, a line-for-line port of Redis's
``processMultibulkBuffer``/``processInlineBuffer``, and uses hiredis as an accelerator for the
stretches where hiredis provably returns the same commands:

1. *Guard*: new bytes are scanned for a type byte followed by as many digits as the smaller
   limit has (``[*$%~>|=]`` and 7 digits with the default limits; with ``bytes.translate`` and
   ``find``, which stay in C where a regular expression would not). hiredis is fed only the
   bytes before the first match, so every count it reads is below the limits. The command
   holding the match is parsed exactly, which rejects a real oversized header as soon as its
   line is complete, before any of its body is buffered. Most matches are harmless (a 1 MB
   value, a value that happens to contain ``*1234567``); they only cost speed.
2. *Check*: a batch from hiredis is accepted only if every reply is a list of ``bytes`` and we
   know where the batch ends. If hiredis has no unread byte right after its last reply, the
   batch ends where the fed bytes end; otherwise the end is the sum of the commands' canonical
   sizes. When none of ``+ = ( > ~ |`` occurs in the bytes hiredis saw, nothing but arrays of
   bulk strings can have produced the batch, so that sum is exact. Otherwise each command must
   start with ``*``, and the sum must be confirmed: by the fed bytes, or by a second reader that
   returns the same commands from exactly those bytes and nothing more.
3. *Hand-over*: when hiredis stops short of the end of the buffer (a partial command, the
   guard, or bytes it waits on where Redis would not, such as a header ended by a bare CR or
   an inline command that looks like a reply), the exact parser takes the next command,
   incrementally, so a big bulk costs nothing per read; hiredis only ever returns complete
   commands, and every limit on a partial command is applied exactly as Redis does. Anything
   else (a hiredis protocol error, a non-list reply, a non-bytes element, a failed check)
   drops the reader and its batch; the exact parser takes over from the start of the batch
   until past the bytes hiredis had seen. Error messages and inline commands thus always come
   from the exact parser, and the two paths agree event for event: the fuzz test compares
   them on random streams, and the exact parser was compared with Redis 7.0 itself on random
   streams (same replies; a NUL in an inline line aside, below).

Speed, on the project's 2-core machine with other work running (best of 5)::

    PYTHONPATH=src python -m timeit -s "from chorusdb.wire.resp import RespParser, \\
        encode_command; p = RespParser(); d = encode_command([b'SET', b'k', b'v']) * 16" \\
        "p.receive_data(d); p.next_events(4096)"

gives ~6.2 us per 16 commands (~2.6 M commands/s); hiredis alone takes ~1.5 us, the exact
parser alone (``use_hiredis=False``) ~60 us. One command per read costs ~2.3 us, mostly work
per call.

Limits (``chorusdb.limits``): more than ``args_max`` arguments -> ``invalid multibulk length``;
a bulk longer than ``bulk_bytes_max`` or negative -> ``invalid bulk length``; an inline line
longer than ``inline_bytes_max`` with no newline yet -> ``too big inline request`` (and Redis's
``too big mbulk count string`` / ``too big bulk count string`` for header lines); more than
``buffer_bytes_max`` bytes buffered for commands not yet complete (arguments of a partly read
command included) -> ``query buffer limit exceeded``. The parser itself never holds more than
about twice ``buffer_bytes_max`` (its buffer and hiredis's copy) plus one read.

Known difference from Redis: Redis finds inline line ends with ``strchr``, so a NUL before the
newline makes it wait for more data; we find the newline in binary-safe fashion and, as
``sdssplitargs`` does, end the line's arguments at the NUL.

Replies
=======

``encode_reply(value, protocol)`` serialises the values of ``chorusdb.replies`` for RESP2 or
RESP3: ``bytes`` -> bulk string, ``int`` -> integer, ``None`` -> ``$-1`` / ``_``, ``list`` or
``tuple`` -> array, ``dict`` -> map (RESP3) or flat array (RESP2), ``float`` -> double (RESP3)
or a bulk string formatted as Redis formats doubles (RESP2), ``bool`` -> ``#t``/``#f`` (RESP3)
or ``:1``/``:0`` (RESP2), ``Simple`` -> ``+text``, ``Error`` -> ``-text``. ``str`` is not a
reply value (``TypeError``). CR and LF inside simple strings and errors become spaces.
``encode_replies`` concatenates a batch; the common replies (``+OK``, small integers, short
bulk headers, nulls) come from precomputed tables.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import hiredis

from chorusdb import limits
from chorusdb.replies import OK, PONG, Error, Simple


class NeedData(enum.Enum):
    """The type of ``NEED_DATA``."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA
"""Returned when no complete event is buffered: feed more bytes."""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The client broke the protocol. Reply ``-ERR Protocol error: <message>`` and close."""

    message: str


Command = list[bytes]

# Bytes whose presence means hiredis may have parsed something other than arrays of bulk
# strings into what looks like one (see the module docstring, "Check").
_ambiguous_type_bytes = b"+=(>~|"
_probe_command = b"*0\r\n"
_star = ord("*")
_dollar = ord("$")
# Redis's string2ll: an optional minus, no leading zeros, no plus sign, no spaces.
_strict_integer = re.compile(rb"0|-?[1-9][0-9]{0,18}")
_inline_specials = re.compile(rb"[\"'\x00\x0b\x0c]")
_digit_counts = tuple(len(str(number)) for number in range(10_000))


# The guard looks for a type byte followed by many digits. A regular expression tries every
# ``*`` and ``$`` of the headers as a candidate in Python's regex engine (measured ~6x slower
# than hiredis's whole parse); mapping the bytes to three classes with ``bytes.translate`` and
# searching for a fixed needle stays in C.
_guard_classes = bytes(
    ord("T") if byte in b"*$%~>|=" else ord("0") if byte in b"0123456789" else ord("x")
    for byte in range(256)
)


class RespParser:
    """Turns the bytes a client sends into commands; see the module docstring."""

    __slots__ = (
        "_bulk_bytes_max",
        "_args_max",
        "_inline_bytes_max",
        "_buffer_bytes_max",
        "_use_hiredis",
        "_guard",
        "_guard_overlap",
        "_buffer",
        "_pos",
        "_reader",
        "_fed",
        "_scanned",
        "_risky",
        "_exact_until",
        "_args",
        "_args_remaining",
        "_bulk_length",
        "_args_bytes",
        "_error",
    )

    def __init__(
        self,
        *,
        bulk_bytes_max: int = limits.value_bytes_max,
        args_max: int = limits.command_args_max,
        inline_bytes_max: int = limits.inline_command_bytes_max,
        buffer_bytes_max: int = limits.query_buffer_bytes_max,
        use_hiredis: bool = True,
    ) -> None:
        """``use_hiredis=False`` runs the exact parser alone: the reference the accelerated
        path is tested against, and the same events, slower."""
        assert bulk_bytes_max >= 0 and args_max >= 1 and inline_bytes_max >= 1
        self._bulk_bytes_max = bulk_bytes_max
        self._args_max = args_max
        self._inline_bytes_max = inline_bytes_max
        self._buffer_bytes_max = buffer_bytes_max
        self._use_hiredis = use_hiredis
        # A header number with this many digits may exceed a limit; shorter ones cannot.
        guard_digits = min(len(str(bulk_bytes_max)), len(str(args_max)))
        self._guard = b"T" + b"0" * guard_digits
        self._guard_overlap = guard_digits + 1
        # Bytes received and not yet consumed start at ``_pos``; positions are buffer offsets.
        self._buffer = bytearray()
        self._pos = 0
        # hiredis, when in use, was fed ``_buffer[_pos:_fed]`` starting at a command boundary.
        self._reader: hiredis.Reader | None = None
        self._fed = 0
        # The guard scanned the buffer up to ``_scanned``; ``_risky`` is its first match if it
        # is at or after ``_pos`` (a match hiredis must not read past).
        self._scanned = 0
        self._risky = -1
        # Commands starting before ``_exact_until`` go through the exact parser.
        self._exact_until = 0
        # The exact parser's multibulk command in progress (Redis's argv/multibulklen/bulklen).
        self._args: Command = []
        self._args_remaining = 0
        self._bulk_length = -1
        self._args_bytes = 0
        self._error: ProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for commands not yet returned (arguments already split off included)."""
        return len(self._buffer) - self._pos + self._args_bytes

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client (ignored once a protocol error was reported)."""
        if self._error is None:
            self._buffer += data

    def next_event(self) -> Command | NeedData | ProtocolError:
        commands, error = self.next_events(1)
        if commands:
            return commands[0]
        return error if error is not None else NEED_DATA

    def next_events(self, max_count: int) -> tuple[list[Command], ProtocolError | None]:
        """Up to ``max_count`` complete commands, and the protocol error that stopped parsing,
        if one did (it is returned again by every later call)."""
        assert max_count >= 1
        commands: list[Command] = []
        if self._error is not None:
            return commands, self._error
        buffer = self._buffer
        while len(commands) < max_count:
            if self._args_remaining == 0:
                if self._pos >= len(buffer):
                    break
                if (
                    self._use_hiredis
                    and self._pos >= self._exact_until
                    and buffer[self._pos] == _star
                ):
                    if not self._parse_fast(commands, max_count):
                        break
                    continue
                self._reader = None
            event = self._parse_exact()
            if event is NEED_DATA:
                break
            if type(event) is ProtocolError:
                self._error = event
                break
            if event:
                commands.append(event)
        if (
            len(buffer) - self._pos + self._args_bytes > self._buffer_bytes_max
            and self._error is None
            and len(commands) < max_count
        ):
            self._error = ProtocolError("query buffer limit exceeded")
        if self._pos:
            self._discard_consumed()
        return commands, self._error

    # --- the hiredis path ----------------------------------------------------------------------

    def _parse_fast(self, commands: list[Command], max_count: int) -> bool:
        """Parse commands at ``_pos`` with hiredis into ``commands``; False when it needs data.

        On any doubt it returns True with ``_exact_until`` set past ``_pos`` and the reader
        dropped, so that the caller parses the next command(s) exactly.
        """
        buffer = self._buffer
        start = self._pos
        safe_end = self._risky if self._risky >= start else self._scan()
        reader = self._reader
        if reader is None:
            reader = self._reader = hiredis.Reader()
            self._fed = start
        if self._fed < safe_end:
            reader.feed(buffer, self._fed, safe_end - self._fed)
            self._fed = safe_end
        batch: list[Command] = []
        limit = max_count - len(commands)
        reply: object = None
        gets = reader.gets
        has_data = reader.has_data
        append = batch.append
        try:
            # has_data() right after a reply tells whether the reply ended the fed bytes; once
            # gets() has answered False, a pending partial command can no longer be told apart.
            while has_data():
                reply = gets()
                if reply is False:
                    break
                append(reply)
                if len(batch) == limit:
                    break
        except hiredis.ProtocolError:
            return self._fall_back()
        if batch:
            if not {list}.issuperset(map(type, batch)):
                return self._fall_back()
            end = self._batch_end(batch, start, drained=reply is not False and not has_data())
            if end < 0:
                return self._fall_back()
            self._pos = end
            commands.extend(filter(None, batch))
        if len(batch) == limit:
            return True
        if self._pos == len(buffer):
            return False
        # hiredis stopped short of the end of the buffer: before a partial command, at the
        # guard, or on bytes it waits on where Redis would not (a header line ended by a bare
        # CR, an inline command looking like a reply). The exact parser takes the next command
        # (incrementally: a big bulk is waited for cheaply), so hiredis only ever returns
        # complete commands and every limit on a partial one is Redis's.
        self._reader = None
        self._exact_until = max(self._pos, self._risky) + 1
        return True

    def _batch_end(self, batch: list[Command], start: int, *, drained: bool) -> int:
        """Where ``batch``, parsed by hiredis from ``start``, ends in the buffer; -1 if it is
        not exactly what the exact parser would have returned."""
        if not {bytes}.issuperset(map(type, chain.from_iterable(batch))):
            return -1
        buffer = self._buffer
        seen = buffer[start : self._fed]
        if len(seen.translate(None, _ambiguous_type_bytes)) == len(seen):
            return self._fed if drained else start + _canonical_size(batch)
        position = start
        for command in batch:
            if buffer[position] != _star:
                return -1
            position += _canonical_size((command,))
            if position > self._fed:
                return -1
        if drained:
            return position if position == self._fed else -1
        probe = hiredis.Reader()
        probe.feed(buffer, start, position - start)
        probe.feed(_probe_command)
        try:
            replies = [probe.gets() for _ in range(len(batch) + 1)]
        except hiredis.ProtocolError:
            return -1
        if replies[:-1] == batch and replies[-1] == [] and not probe.has_data():
            return position
        return -1

    def _fall_back(self) -> bool:
        """Drop hiredis and its unchecked batch: parse everything it was fed exactly."""
        self._reader = None
        self._exact_until = max(self._fed, self._pos + 1)
        return True

    def _scan(self) -> int:
        """Run the guard over bytes not scanned yet; return the end of the bytes hiredis may
        see: the first guard match, or the end of the buffer."""
        buffer = self._buffer
        start = max(self._pos, self._scanned - self._guard_overlap)
        classes = (buffer if start == 0 else buffer[start:]).translate(_guard_classes)
        found = classes.find(self._guard)
        if found < 0:
            self._risky = -1
            self._scanned = len(buffer)
            return len(buffer)
        self._risky = start + found
        self._scanned = self._risky + 1
        return self._risky

    # --- the exact parser (Redis's processMultibulkBuffer and processInlineBuffer) -------------

    def _parse_exact(self) -> Command | NeedData | ProtocolError:
        """One command (possibly empty: skip it), ``NEED_DATA`` or a protocol error."""
        buffer = self._buffer
        if self._args_remaining == 0:
            if buffer[self._pos] != _star:
                return self._parse_inline()
            line_end = self._header_line_end("too big mbulk count string")
            if type(line_end) is not int:
                return line_end
            count = _parse_strict_integer(buffer, self._pos + 1, line_end)
            if count is None or count > self._args_max:
                return ProtocolError("invalid multibulk length")
            self._pos = line_end + 2
            if count <= 0:
                return []
            self._args_remaining = count
        while self._args_remaining:
            if self._bulk_length < 0:
                line_end = self._header_line_end("too big bulk count string")
                if type(line_end) is not int:
                    return line_end
                if buffer[self._pos] != _dollar:
                    return ProtocolError(f"expected '$', got '{chr(buffer[self._pos])}'")
                length = _parse_strict_integer(buffer, self._pos + 1, line_end)
                if length is None or length < 0 or length > self._bulk_bytes_max:
                    return ProtocolError("invalid bulk length")
                self._pos = line_end + 2
                self._bulk_length = length
            end = self._pos + self._bulk_length
            if end + 2 > len(buffer):
                return NEED_DATA
            self._args.append(bytes(buffer[self._pos : end]))
            self._args_bytes += self._bulk_length
            self._pos = end + 2
            self._bulk_length = -1
            self._args_remaining -= 1
        command = self._args
        self._args = []
        self._args_bytes = 0
        return command

    def _header_line_end(self, too_big: str) -> int | NeedData | ProtocolError:
        """The offset of the ``\\r`` ending the header line at ``_pos`` (Redis looks for the
        ``\\r`` and then skips two bytes, whatever the second is)."""
        buffer = self._buffer
        line_end = buffer.find(b"\r", self._pos)
        if line_end < 0:
            if len(buffer) - self._pos > self._inline_bytes_max:
                return ProtocolError(too_big)
            return NEED_DATA
        if line_end + 2 > len(buffer):
            return NEED_DATA
        return line_end

    def _parse_inline(self) -> Command | NeedData | ProtocolError:
        buffer = self._buffer
        newline = buffer.find(b"\n", self._pos)
        if newline < 0:
            if len(buffer) - self._pos > self._inline_bytes_max:
                return ProtocolError("too big inline request")
            return NEED_DATA
        line_end = newline - 1 if newline > self._pos and buffer[newline - 1] == 13 else newline
        arguments = split_inline_arguments(bytes(buffer[self._pos : line_end]))
        if arguments is None:
            return ProtocolError("unbalanced quotes in request")
        self._pos = newline + 1
        return arguments

    def _discard_consumed(self) -> None:
        """Drop consumed bytes from the front of the buffer and rebase every offset (an offset
        that ends up negative pointed into consumed bytes and means nothing any more)."""
        consumed = self._pos
        if consumed == len(self._buffer):
            self._buffer.clear()
        else:
            del self._buffer[:consumed]  # cheap: CPython moves a bytearray's start
        self._pos = 0
        self._fed -= consumed
        self._scanned -= consumed
        self._risky -= consumed
        self._exact_until -= consumed


def _parse_strict_integer(buffer: bytearray, start: int, end: int) -> int | None:
    """Redis's string2ll over ``buffer[start:end]``: the value, or None if not canonical."""
    if _strict_integer.fullmatch(buffer, start, end) is None:
        return None
    value = int(buffer[start:end])
    return value if -(2**63) <= value < 2**63 else None


def _digits(number: int) -> int:
    return _digit_counts[number] if number < len(_digit_counts) else len(str(number))


def _canonical_size(commands: Sequence[Command]) -> int:
    """Bytes of ``commands`` encoded as multibulk requests (``*N\\r\\n`` then ``$len\\r\\n...``)."""
    arguments = list(chain.from_iterable(commands))
    lengths = list(map(len, arguments))
    return (
        sum(lengths)
        + sum(map(_digits, lengths))
        + 5 * len(lengths)
        + sum(map(_digits, map(len, commands)))
        + 3 * len(commands)
    )


_inline_escapes = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("b"): b"\b",
    ord("a"): b"\a",
}
_hex_digits = frozenset(b"0123456789abcdefABCDEF")
_blanks = frozenset(b" \t\n\r\x0b\x0c")  # C's isspace
_token_ends = frozenset(b" \n\r\t")  # where an unquoted token ends (and at NUL)


def split_inline_arguments(line: bytes) -> Command | None:
    """Split an inline command as Redis's ``sdssplitargs`` does; None for unbalanced quotes.

    Blanks separate arguments; ``"..."`` allows ``\\n \\r \\t \\b \\a \\\\ \\" \\xHH`` escapes
    (any other escaped byte stands for itself); ``'...'`` allows only ``\\'``; a closing quote
    must be followed by a blank or the end; a NUL ends the line.
    """
    if _inline_specials.search(line) is None:
        return line.split()
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    arguments: Command = []
    length = len(line)
    index = 0
    while True:
        while index < length and line[index] in _blanks:
            index += 1
        if index == length:
            return arguments
        current = bytearray()
        in_double = in_single = False
        while True:
            byte = line[index] if index < length else 0
            following = line[index + 1] if index + 1 < length else 0
            if in_double:
                if byte == 0:
                    return None
                if (
                    byte == 0x5C
                    and following == ord("x")
                    and index + 3 < length
                    and line[index + 2] in _hex_digits
                    and line[index + 3] in _hex_digits
                ):
                    current.append(int(line[index + 2 : index + 4], 16))
                    index += 3
                elif byte == 0x5C and following:
                    index += 1
                    current += _inline_escapes.get(following, bytes([following]))
                elif byte == 0x22:
                    if following and following not in _blanks:
                        return None
                    index += 1
                    break
                else:
                    current.append(byte)
            elif in_single:
                if byte == 0:
                    return None
                if byte == 0x5C and following == 0x27:
                    index += 1
                    current.append(0x27)
                elif byte == 0x27:
                    if following and following not in _blanks:
                        return None
                    index += 1
                    break
                else:
                    current.append(byte)
            elif byte == 0 or byte in _token_ends:
                break
            elif byte == 0x22:
                in_double = True
            elif byte == 0x27:
                in_single = True
            else:
                current.append(byte)
            index += 1
        arguments.append(bytes(current))


def encode_command(arguments: Iterable[bytes]) -> bytes:
    """A request as clients send it: a multibulk array of bulk strings."""
    arguments = list(arguments)
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        parts.append(b"$%d\r\n" % len(argument))
        parts.append(argument)
        parts.append(b"\r\n")
    return b"".join(parts)


# --- replies ----------------------------------------------------------------------------------

_small_int_min = -1
_small_int_max = 1024
_small_int_replies = tuple(b":%d\r\n" % n for n in range(_small_int_min, _small_int_max + 1))
_bulk_headers = tuple(b"$%d\r\n" % n for n in range(1024))
_array_headers = tuple(b"*%d\r\n" % n for n in range(1024))
_crlf = b"\r\n"
_line_breaks = str.maketrans("\r\n", "  ")


def format_double(value: float) -> str:
    """A double as Redis prints it: ``inf``, ``-inf``, ``nan``, integral values without a
    fraction (up to Redis's ``LLONG_MAX/2`` bound), the shortest round-trip form otherwise."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if value.is_integer() and abs(value) <= 2**62:
        return str(int(value))
    return repr(value)


def _encode_int(value: int) -> bytes:
    if _small_int_min <= value <= _small_int_max:
        return _small_int_replies[value - _small_int_min]
    return b":%d\r\n" % value


def _encode_bulk(value: bytes) -> bytes:
    length = len(value)
    if length < 1024:
        return _bulk_headers[length] + value + _crlf
    return b"$%d\r\n%b\r\n" % (length, value)


def _encode_line(prefix: str, text: str) -> bytes:
    return (prefix + text.translate(_line_breaks) + "\r\n").encode()


def _make_encoder(protocol: int) -> Callable[[object], bytes]:
    """The reply encoder for one protocol version: a type-dispatch table and a recursion."""
    resp3 = protocol == 3
    null = b"_\r\n" if resp3 else b"$-1\r\n"
    true, false = (b"#t\r\n", b"#f\r\n") if resp3 else (b":1\r\n", b":0\r\n")
    ok = _encode_line("+", OK.text)
    pong = _encode_line("+", PONG.text)

    def encode(value: object) -> bytes:
        if value is OK:
            return ok
        encoder = dispatch.get(type(value))
        if encoder is None:
            encoder = _subclass_encoder(value)
        return encoder(value)

    def encode_array(items: Sequence[object]) -> bytes:
        count = len(items)
        header = _array_headers[count] if count < 1024 else b"*%d\r\n" % count
        return header + b"".join(map(encode, items))

    def encode_map(mapping: dict[object, object]) -> bytes:
        pairs = b"".join(encode(key) + encode(item) for key, item in mapping.items())
        return b"%c%d\r\n%b" % (b"%" if resp3 else b"*", len(mapping) * (1 if resp3 else 2), pairs)

    def encode_double(value: float) -> bytes:
        text = format_double(value).encode()
        return b",%b\r\n" % text if resp3 else _encode_bulk(text)

    def encode_simple(value: Simple) -> bytes:
        return pong if value is PONG else _encode_line("+", value.text)

    def refuse_str(value: str) -> bytes:
        raise TypeError(f"str is not a reply value (encode it first): {value!r:.60}")

    dispatch: dict[type, Callable] = {
        bytes: _encode_bulk,
        int: _encode_int,
        type(None): lambda value: null,
        bool: lambda value: true if value else false,
        list: encode_array,
        tuple: encode_array,
        dict: encode_map,
        float: encode_double,
        Simple: encode_simple,
        Error: lambda value: _encode_line("-", value.text),
        str: refuse_str,
    }

    def _subclass_encoder(value: object) -> Callable:
        for base in (bool, int, float, bytes, str, list, tuple, dict):  # bool before int
            if isinstance(value, base):
                return dispatch[base]
        raise TypeError(f"{type(value).__name__} is not a reply value")

    return encode


_encoders = {2: _make_encoder(2), 3: _make_encoder(3)}


def encode_reply(value: object, protocol: int) -> bytes:
    """``value`` (see ``chorusdb.replies``) as RESP ``protocol`` 2 or 3."""
    return _encoders[protocol](value)


def encode_replies(values: Iterable[object], protocol: int) -> bytes:
    """The concatenated encodings of ``values``: one buffer for one ``transport.write``."""
    return b"".join(map(_encoders[protocol], values))
