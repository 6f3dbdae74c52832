"""Binary encoding of frozen dataclasses with msgpack: log entries, peer messages, snapshots.

Every registered dataclass type has an explicit, stable *tag* (0..127). An instance is encoded
as a msgpack array whose first element is a *marker* — an empty msgpack extension value whose
type code is the tag — followed by the field values in declaration order, each encoded the same
way, recursively. So ``LogEntry(Position(3, 7), SetValue(b"k", b"v", 0))`` becomes::

    [ext(tag(LogEntry)), [ext(tag(Position)), 3, 7], [ext(tag(SetValue)), b"k", b"v", 0]]

Why this shape:

- Tags, not class names, are the format: a class may be renamed or moved freely, but a tag is
  part of the on-disk log and of the peer protocol and must never be reused for another type.
  msgpack reserves extension codes -128..-1 for itself, which leaves 0..127 for us.
- The C packer does all the work in one pass. Python runs once per dataclass instance: the
  ``default`` callback returns ``(marker, *fields)``, the fields read by one cached
  ``operator.attrgetter`` (field names come from ``dataclasses.fields`` once per type), and the
  packer carries on into that tuple itself. A representation with the fields inside the
  extension payload would need a nested packer per instance, which measured 2.4x slower.
- On decode, ``ext_hook`` turns a marker into its type's description and ``list_hook`` builds
  the instance when an array starts with one. Markers are counted: one that is not the first
  element of an array (which no encoder produces) leaves the count unbalanced and the input is
  rejected, so a marker never leaks into decoded values.
- No field names are stored, so entries are compact; the price is that adding, removing or
  reordering fields changes the format (give the new shape a new tag).

Values: ``bytes`` stay bytes and ``str`` stays str (msgpack's bin and str types), ints, floats,
bools and ``None`` map directly, dicts stay dicts (any hashable keys, bytes included), and
every array decodes as a **tuple** — tuples and lists alike, which is what frozen dataclasses
hold. ``IntEnum`` values are encoded as plain ints; on decode, a field annotated with an
``IntEnum`` type gets the enum member back. Other types (and msgpack ``ExtType`` values, whose
codes are ours) are not values of this format.

Decoding is strict: malformed msgpack, trailing bytes, an unknown tag, a misplaced marker or a
wrong number of fields raise ``CodecError``, so a corrupted record or a peer speaking another
version is an error, never data.

A codec holds no mutable state (each call makes its own small packer), so one instance may be
shared by the event loop and the storage thread.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import typing
from collections.abc import Callable, Mapping

import msgpack

tag_max = 127
"""Largest tag: msgpack application extension codes are 0..127."""

packer_initial_bytes = 4096
"""Initial buffer of the per-call packer (it grows as needed). msgpack's default initial buffer
(256 KiB) made every call with a ``default`` callback ~10x slower in measurements."""


class CodecError(ValueError):
    """The bytes are not a valid encoding, or the object cannot be encoded."""


class _TypeInfo:
    """What the codec needs to know about one registered type, computed once."""

    __slots__ = ("tag", "cls", "marker", "array_length", "read_fields", "build")

    def __init__(self, tag: int, cls: type) -> None:
        if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
            raise TypeError(f"{cls!r} is not a dataclass type")
        if not 0 <= tag <= tag_max:
            raise ValueError(f"tag {tag} of {cls.__name__} is outside 0..{tag_max}")
        names = tuple(field.name for field in dataclasses.fields(cls))
        self.tag = tag
        self.cls = cls
        self.marker = msgpack.ExtType(tag, b"")
        self.array_length = 1 + len(names)
        self.read_fields = _fields_reader(names)
        self.build = _builder(cls, names)


def _fields_reader(names: tuple[str, ...]) -> Callable[[object], tuple[object, ...]]:
    """A function returning the values of ``names`` as a tuple (attrgetter, shaped for 0/1/n)."""
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        read_one = operator.attrgetter(names[0])
        return lambda obj: (read_one(obj),)
    return operator.attrgetter(*names)


def _builder(cls: type, names: tuple[str, ...]) -> Callable[..., object]:
    """The constructor to call with decoded field values: ``cls`` itself, or, when fields are
    annotated with an ``IntEnum`` type, a wrapper that turns those ints back into members."""
    hints = typing.get_type_hints(cls)
    enum_fields = tuple(
        (position, hints[name])
        for position, name in enumerate(names)
        if isinstance(hints[name], type) and issubclass(hints[name], enum.IntEnum)
    )
    if not enum_fields:
        return cls

    def build_with_enums(*values: object) -> object:
        converted = list(values)
        for position, enum_type in enum_fields:
            converted[position] = enum_type(converted[position])
        return cls(*converted)

    return build_with_enums


class DataclassCodec:
    """Encodes and decodes registered dataclasses (and plain values) as msgpack.

    ``types`` maps each tag to its dataclass type; both tags and types must be unique.
    """

    __slots__ = ("_by_type", "_by_tag")

    def __init__(self, types: Mapping[int, type]) -> None:
        by_tag = {tag: _TypeInfo(tag, cls) for tag, cls in types.items()}
        by_type = {info.cls: info for info in by_tag.values()}
        if len(by_type) != len(by_tag):
            raise ValueError("a dataclass type is registered under two tags")
        self._by_tag = by_tag
        self._by_type = by_type

    def encode(self, obj: object) -> bytes:
        by_type = self._by_type

        def as_array(value: object) -> tuple[object, ...]:
            info = by_type.get(type(value))
            if info is None:
                if isinstance(value, int):  # msgpack calls us for ints it cannot represent
                    raise CodecError(f"integer {value} is outside msgpack's 64-bit range")
                raise CodecError(f"cannot encode a {type(value).__name__}: not a registered type")
            return (info.marker, *info.read_fields(value))

        packer = msgpack.Packer(default=as_array, use_bin_type=True, buf_size=packer_initial_bytes)
        try:
            return packer.pack(obj)
        except CodecError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            raise CodecError(f"cannot encode {type(obj).__name__}: {error}") from error

    def decode(self, data: bytes) -> object:
        by_tag = self._by_tag
        unmatched_markers = 0

        def marker_type(tag: int, payload: bytes) -> _TypeInfo:
            nonlocal unmatched_markers
            info = by_tag.get(tag)
            if info is None or payload:
                raise CodecError(f"unknown tag {tag}" if info is None else "marker with payload")
            unmatched_markers += 1
            return info

        def build(items: list[object]) -> object:
            nonlocal unmatched_markers
            if items and type(info := items[0]) is _TypeInfo:
                if len(items) != info.array_length:
                    raise CodecError(
                        f"{info.cls.__name__} (tag {info.tag}) has {info.array_length - 1} "
                        f"fields, got {len(items) - 1}"
                    )
                unmatched_markers -= 1
                del items[0]
                return info.build(*items)
            return tuple(items)

        try:
            value = msgpack.unpackb(
                data,
                ext_hook=marker_type,
                list_hook=build,
                use_list=True,
                raw=False,
                strict_map_key=False,
            )
        except CodecError:
            raise
        except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as error:
            raise CodecError(f"malformed encoding: {error}") from error
        if unmatched_markers:
            raise CodecError("malformed encoding: a type marker outside its array's first slot")
        return value
