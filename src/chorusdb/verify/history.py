"""Client histories: Jepsen-style operation records, their pairing, and JSON Lines.

A history is the ordered list of everything clients (and the fault injector) saw, recorded by
one process as it happened:

- an **invocation** (``type="invoke"``): client ``process`` asks for ``f`` on ``key`` with
  argument ``value``;
- its **completion**, one of ``"ok"`` (done; ``value`` is the result), ``"fail"`` (a definite
  error: nothing was applied, e.g. ``-NOTLEADER``), or ``"info"`` (unknown outcome: a timeout, a
  lost connection, ``-INDOUBT``; the operation may take effect at any time after its invocation,
  or never);
- a **note** (``type="note"``): a fact from the fault injector (``process="nemesis"``) or from a
  node (``process="n3"``), such as a partition, a promotion or a power loss. Jepsen writes
  nemesis entries as ``info``; here ``info`` always means an unknown client outcome.

Rules every history obeys (``History.append`` enforces them and raises ``MalformedHistory``):

- ``index`` counts records from 0 and ``time`` never goes back: one clock (virtual ns in the
  simulator, ``time.monotonic_ns()`` of the single harness process in real runs);
- a client process has at most one operation outstanding; after an ``info`` it never invokes
  again (the workload continues under a new process id, as Jepsen does);
- a completion names the same ``f`` and ``key`` as its invocation.

**Real-time order is record order.** The recorder appends each record when the event happens,
so operation A precedes operation B exactly when A's completion record comes before B's
invocation record. The checkers compare record indices, never times: two events with the same
virtual time stay ordered. ``time`` is for people and for matching notes (loss windows).

Values of client records, by ``f`` (the convention the checkers rely on):

============  ==========================  ============================================
``f``          invocation ``value``          ``ok`` ``value``
============  ==========================  ============================================
``set``        the value written (bytes)    the same value (echoed)
``get``        ``None``                     the value read (bytes, ``None`` if missing)
``rpush``      one element (bytes)          the same element (echoed)
``lrange``     ``None``                     the whole list read (tuple of bytes)
``incrby``     the delta (int)              the counter's new value (int, INCRBY's reply)
``del``        ``None``                     ``None``
``cas``        ``(expected, new)``          ``True`` swapped / ``False`` compare failed
``put``        value (porcupine kv)         echoed
``append``     suffix (porcupine kv)        echoed
============  ==========================  ============================================

``fail`` and ``info`` records echo the invocation's value. Writes should carry unique values
(``c<process>-<seq>``): it keeps the checkers cheap and their verdicts precise.

JSON Lines encoding, one record per line, keys in this order (absent when ``None``)::

    {"i":41,"p":3,"type":"invoke","f":"rpush","k":"k7","v":"c3-118","t":2815000123,"node":"n2"}
    {"i":45,"p":5,"type":"info","f":"set","k":"k2","v":"c5-77","t":2816000000,"err":"timeout"}
    {"i":46,"p":"nemesis","type":"note","f":"partition","v":{"blocked":[["n1","n2"]]},"t":...}
    {"i":52,"p":7,"type":"ok","f":"get","k":"k2","v":"c5-77","t":2817000000,"node":"n3","stale":true}

Byte strings (every key, and every string inside a client record's value) are written as
**latin-1 text**: byte ``b`` becomes code point ``b``, so ASCII stays readable, NUL and
non-UTF-8 bytes survive (as ``\\u0000``, ``\\u00ff``), and decoding is ``str.encode("latin-1")``.
Client values hold no text strings, so the mapping is unambiguous; a JSON array in a client
value decodes to a tuple. Note values are plain JSON (strings stay strings).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any, Final, Union

from chorusdb.replies import DEFINITE_ERROR_CLASSES

Value = Union[bytes, int, bool, None, tuple["Value", ...]]
"""A client record's value: bytes, int, bool, None, or a tuple of those."""

INVOKE: Final = "invoke"
OK: Final = "ok"
FAIL: Final = "fail"
INFO: Final = "info"
NOTE: Final = "note"
COMPLETION_TYPES: Final = frozenset({OK, FAIL, INFO})
RECORD_TYPES: Final = frozenset({INVOKE, NOTE}) | COMPLETION_TYPES


class MalformedHistory(ValueError):
    """A record breaks one of the history rules (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class Op:
    """One record of a history, exactly as written to the JSON Lines file.

    ``process`` is an int for a client and a string (``"nemesis"``, a node id) for a note.
    ``key`` is ``None`` for notes and key-less operations; ``node`` is the node the client
    talked to (or the node a note is about), when known; ``error`` the error text of a
    ``fail`` or ``info``. ``stale`` marks the ``ok`` of a read that a replica answered from its
    applied state without confirming it is current: it promises a consistent prefix, not
    linearizability, and ``verify.check`` judges it so.
    """

    index: int
    process: int | str
    type: str
    f: str
    key: bytes | None
    value: Any
    time: int
    node: str | None = None
    error: str | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """A client invocation paired with its completion (``None``: it never completed).

    ``call_index`` and ``return_index`` are record indices, the real-time order (module
    docstring); ``return_index`` is ``None`` when the outcome is unknown, meaning "any time
    after the call, or never".
    """

    invocation: Op
    completion: Op | None

    @property
    def process(self) -> int:
        assert isinstance(self.invocation.process, int)
        return self.invocation.process

    @property
    def f(self) -> str:
        return self.invocation.f

    @property
    def key(self) -> bytes | None:
        return self.invocation.key

    @property
    def input(self) -> Any:
        """The invocation's argument (its type depends on ``f``: module docstring)."""
        return self.invocation.value

    @property
    def status(self) -> str:
        """``"ok"``, ``"fail"`` or ``"info"`` (``"info"`` also when it never completed)."""
        return INFO if self.completion is None else self.completion.type

    @property
    def output(self) -> Any:
        """The result of an ``ok`` operation (by ``f``: module docstring); ``None`` otherwise."""
        if self.completion is None or self.completion.type != OK:
            return None
        return self.completion.value

    @property
    def call_index(self) -> int:
        return self.invocation.index

    @property
    def return_index(self) -> int | None:
        if self.completion is None or self.completion.type == INFO:
            return None
        return self.completion.index

    @property
    def node(self) -> str | None:
        """The node that answered (or, failing that, the one the client asked)."""
        if self.completion is not None and self.completion.node is not None:
            return self.completion.node
        return self.invocation.node

    @property
    def stale(self) -> bool:
        """A read answered from a replica's applied state (``Op.stale``)."""
        return self.completion is not None and self.completion.stale

    @property
    def records(self) -> tuple[Op, ...]:
        """The invocation and, when there is one, the completion."""
        if self.completion is None:
            return (self.invocation,)
        return (self.invocation, self.completion)


def error_outcome(error_text: str) -> str:
    """``FAIL`` for an error that guarantees nothing was applied, else ``INFO`` (unknown).

    The split is ``replies.DEFINITE_ERROR_CLASSES``: any other class (``INDOUBT``, anything
    unrecognised) is treated as unknown, which is always safe for the checkers.
    """
    return FAIL if error_text.split(" ", 1)[0] in DEFINITE_ERROR_CLASSES else INFO


class History:
    """An append-only list of records that pairs invocations with completions as they come.

    Build one with ``History(records)``, ``History.read_jsonl(file)`` or a ``HistoryRecorder``.
    """

    def __init__(self, records: Iterable[Op] = ()) -> None:
        self._records: list[Op] = []
        self._outstanding: dict[int, int] = {}  # process -> index of its open invocation
        self._retired: set[int] = set()  # processes that got an ``info``
        self._completion_of: dict[int, int] = {}  # invocation index -> completion index
        for record in records:
            self.append(record)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Op]:
        return iter(self._records)

    def __getitem__(self, index: int) -> Op:
        return self._records[index]

    @property
    def last_time(self) -> int | None:
        return self._records[-1].time if self._records else None

    def outstanding(self, process: int) -> Op | None:
        """The open invocation of ``process``, if it has one."""
        index = self._outstanding.get(process)
        return None if index is None else self._records[index]

    def append(self, record: Op) -> None:
        """Add the next record; raise ``MalformedHistory`` if it breaks a rule."""
        if record.index != len(self._records):
            raise MalformedHistory(f"record {record.index} arrives at position {len(self)}")
        if record.type not in RECORD_TYPES:
            raise MalformedHistory(f"record {record.index}: unknown type {record.type!r}")
        if self._records and record.time < self._records[-1].time:
            raise MalformedHistory(
                f"record {record.index}: time {record.time} goes back from {self._records[-1].time}"
            )
        if record.type == NOTE:
            if not isinstance(record.process, str):
                raise MalformedHistory(f"record {record.index}: a note comes from a named source")
        elif record.type == INVOKE:
            self._open(record)
        else:
            self._close(record)
        self._records.append(record)

    def _open(self, record: Op) -> None:
        process = record.process
        if not isinstance(process, int) or isinstance(process, bool):
            raise MalformedHistory(f"record {record.index}: client process must be an int")
        if process in self._retired:
            raise MalformedHistory(
                f"record {record.index}: process {process} invokes after an info completion"
            )
        if process in self._outstanding:
            raise MalformedHistory(
                f"record {record.index}: process {process} invokes while record "
                f"{self._outstanding[process]} is outstanding"
            )
        self._outstanding[process] = record.index

    def _close(self, record: Op) -> None:
        process = record.process
        if not isinstance(process, int) or process not in self._outstanding:
            raise MalformedHistory(
                f"record {record.index}: {record.type} for process {process!r} with nothing open"
            )
        invocation_index = self._outstanding[process]
        invocation = self._records[invocation_index]
        if (record.f, record.key) != (invocation.f, invocation.key):
            raise MalformedHistory(
                f"record {record.index}: completes {record.f} {record.key!r} but record "
                f"{invocation_index} invoked {invocation.f} {invocation.key!r}"
            )
        del self._outstanding[process]
        self._completion_of[invocation_index] = record.index
        if record.type == INFO:
            self._retired.add(process)

    # --- views ------------------------------------------------------------------------------------

    def operations(self) -> list[Operation]:
        """Every client operation, in invocation order; never-completed ones have no completion."""
        operations = []
        for record in self._records:
            if record.type == INVOKE:
                completion_index = self._completion_of.get(record.index)
                completion = None if completion_index is None else self._records[completion_index]
                operations.append(Operation(record, completion))
        return operations

    def operations_by_key(self) -> dict[bytes | None, list[Operation]]:
        """Operations grouped by key, keys in sorted order (``None`` first), each in call order."""
        groups: dict[bytes | None, list[Operation]] = {}
        for operation in self.operations():
            groups.setdefault(operation.key, []).append(operation)
        return dict(sorted(groups.items(), key=lambda item: (item[0] is not None, item[0] or b"")))

    def filtered(self, keep: Callable[[Op], bool]) -> History:
        """The records ``keep`` accepts, in order, renumbered (real-time order is record order,
        so it survives)."""
        kept = [record for record in self._records if keep(record)]
        return History(replace(record, index=index) for index, record in enumerate(kept))

    def without_stale_reads(self) -> History:
        """This history without the operations a replica answered stale (``Op.stale``): what a
        mode's linearizability claim covers. ``self`` when there are none."""
        dropped = {record.index for operation in self.operations() if operation.stale
                   for record in operation.records}
        if not dropped:
            return self
        return self.filtered(lambda record: record.index not in dropped)

    def notes(self, f: str | None = None) -> list[Op]:
        """The note records, all of them or only those about ``f``."""
        return [r for r in self._records if r.type == NOTE and (f is None or r.f == f)]

    # --- JSON Lines -------------------------------------------------------------------------------

    def write_jsonl(self, file: IO[str]) -> None:
        """Write every record as one JSON line."""
        for record in self._records:
            file.write(encode_record(record) + "\n")

    @classmethod
    def read_jsonl(cls, lines: Iterable[str]) -> History:
        """Parse records, one per line (blank lines are skipped), e.g. from an open file."""
        return cls(decode_record(line) for line in lines if line.strip())


# --- record encoding ------------------------------------------------------------------------------


def encode_record(record: Op) -> str:
    """One JSON line (without the newline) for ``record``; see the module docstring."""
    fields: dict[str, Any] = {"i": record.index, "p": record.process, "type": record.type}
    fields["f"] = record.f
    if record.key is not None:
        fields["k"] = record.key.decode("latin-1")
    if record.value is not None:
        fields["v"] = record.value if record.type == NOTE else _encode_value(record.value)
    fields["t"] = record.time
    if record.node is not None:
        fields["node"] = record.node
    if record.error is not None:
        fields["err"] = record.error
    if record.stale:
        fields["stale"] = True
    return json.dumps(fields, separators=(",", ":"), allow_nan=False)


def decode_record(line: str) -> Op:
    """The record of one JSON line; raises ``MalformedHistory`` for a line that is not one."""
    try:
        fields = json.loads(line)
        record_type = fields["type"]
        raw_key = fields.get("k")
        raw_value = fields.get("v")
        record = Op(
            index=fields["i"],
            process=fields["p"],
            type=record_type,
            f=fields["f"],
            key=None if raw_key is None else raw_key.encode("latin-1"),
            value=raw_value if record_type == NOTE else _decode_value(raw_value),
            time=fields["t"],
            node=fields.get("node"),
            error=fields.get("err"),
            stale=fields.get("stale", False),
        )
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError) as error:
        raise MalformedHistory(f"not a history record: {line[:200]!r} ({error})") from error
    if not _well_typed(record):
        raise MalformedHistory(f"a field of the wrong type in {line[:200]!r}")
    return record


def _well_typed(record: Op) -> bool:
    def integer(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    return (
        integer(record.index)
        and integer(record.time)
        and (integer(record.process) or isinstance(record.process, str))
        and isinstance(record.type, str)
        and isinstance(record.f, str)
        and all(isinstance(v, str | None) for v in (record.node, record.error))
        and isinstance(record.stale, bool)
    )


def _encode_value(value: Value) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, tuple | list):
        return [_encode_value(item) for item in value]
    if value is None or isinstance(value, int):  # bool is an int
        return value
    raise TypeError(f"a client value is bytes, int, bool, None or a tuple, not {value!r}")


def _decode_value(raw: Any) -> Value:
    if isinstance(raw, str):
        return raw.encode("latin-1")
    if isinstance(raw, list):
        return tuple(_decode_value(item) for item in raw)
    if raw is None or isinstance(raw, int):
        return raw
    raise TypeError(f"not a client value: {raw!r}")


def freeze_value(value: Any) -> Value:
    """``value`` with lists turned into tuples, checked to be a client value."""
    if isinstance(value, list | tuple):
        return tuple(freeze_value(item) for item in value)
    if value is None or isinstance(value, bytes | int):
        return value
    raise TypeError(f"a client value is bytes, int, bool, None or a tuple, not {value!r}")


# --- recorder -------------------------------------------------------------------------------------


class _Echo:
    """Marker for "the completion carries the invocation's value"."""


ECHO: Final = _Echo()


class HistoryRecorder:
    """Builds a ``History`` as events happen, and writes each record to ``sink`` if given.

    The caller owns the sink (an open text file, line-buffered if it must survive a crash)
    and the clock: every method takes ``time`` from the one clock of the run.
    """

    def __init__(self, sink: IO[str] | None = None) -> None:
        self.history = History()
        self._sink = sink

    def invoke(
        self,
        process: int,
        f: str,
        key: bytes | None,
        value: Value = None,
        *,
        time: int,
        node: str | None = None,
    ) -> Op:
        """Record that client ``process`` sends ``f(key, value)``."""
        return self._record(process, INVOKE, f, key, freeze_value(value), time, node, None)

    def ok(
        self, process: int, *, time: int, value: Value | _Echo = ECHO, node: str | None = None,
        stale: bool = False,
    ) -> Op:
        """Record the success of ``process``'s open operation; ``value`` is its result.

        Leave ``value`` out for writes (the invocation's value is echoed, Jepsen-style);
        ``stale`` as in ``Op``.
        """
        invocation = self._open_invocation(process)
        result = invocation.value if isinstance(value, _Echo) else freeze_value(value)
        return self._record(process, OK, invocation.f, invocation.key, result, time, node, None,
                            stale)

    def fail(self, process: int, *, time: int, error: str, node: str | None = None) -> Op:
        """Record a definite failure: the operation was not applied."""
        return self._complete(process, FAIL, time, error, node)

    def info(self, process: int, *, time: int, error: str, node: str | None = None) -> Op:
        """Record an unknown outcome; ``process`` must not invoke again."""
        return self._complete(process, INFO, time, error, node)

    def error(self, process: int, *, time: int, error: str, node: str | None = None) -> Op:
        """Record an error reply as ``fail`` or ``info`` according to ``error_outcome``."""
        return self._complete(process, error_outcome(error), time, error, node)

    def note(
        self, source: str, f: str, value: Any = None, *, time: int, node: str | None = None
    ) -> Op:
        """Record a fact from the fault injector or a node; ``value`` must be plain JSON."""
        return self._record(source, NOTE, f, None, value, time, node, None)

    def _complete(
        self, process: int, record_type: str, time: int, error: str, node: str | None
    ) -> Op:
        invocation = self._open_invocation(process)
        return self._record(
            process, record_type, invocation.f, invocation.key, invocation.value, time, node, error
        )

    def _open_invocation(self, process: int) -> Op:
        invocation = self.history.outstanding(process)
        assert invocation is not None, f"process {process} has no open invocation"
        return invocation

    def _record(
        self,
        process: int | str,
        record_type: str,
        f: str,
        key: bytes | None,
        value: Any,
        time: int,
        node: str | None,
        error: str | None,
        stale: bool = False,
    ) -> Op:
        record = Op(len(self.history), process, record_type, f, key, value, time, node, error,
                    stale)
        self.history.append(record)
        if self._sink is not None:
            self._sink.write(encode_record(record) + "\n")
        return record


def records_of(operations: Sequence[Operation]) -> tuple[Op, ...]:
    """The records of ``operations``, in history order: a witness for a report."""
    return tuple(sorted((r for o in operations for r in o.records), key=lambda r: r.index))
