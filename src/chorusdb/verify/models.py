"""Sequential specifications of one key, for the linearizability search.

A model turns each operation of one key into a *step function*: given the key's state before
the operation takes effect, it returns the state after, or ``ILLEGAL`` when the operation could
not have returned what it did in that state. Compiling every operation once, before the search,
keeps the search loop free of dispatch on ``f``; states are small hashable values, because the
search memoises ``(linearized set, state)`` pairs.

Operations reach a model in two forms: ``ok`` (the result is known and checked) and unknown
(``info``, or never completed: the effect is applied, the result is not checked). Failed
operations and unknown pure reads never reach it.

Models, chosen per key from the ``f`` names its operations use:

- ``register``: ``get`` / ``set`` / ``del`` / ``cas``; initially ``None`` (missing).
- ``list``: ``rpush`` (one element) / ``lrange`` (the whole list) / ``del``; initially empty.
  A list state is an interned id: equal sequences get the same small int, so hashing and
  comparing states costs O(1) whatever the list length.
- ``counter``: ``incrby`` (the ``ok`` value is the new total) / ``get`` (bytes holding an int,
  ``None`` = 0) / ``del``; initially 0.
- ``kv``: porcupine's key-value test model: ``get`` / ``put`` / ``append`` on byte strings;
  initially empty, and a missing key reads as empty. Strings are interned like lists.

The list and kv models also give the search a lookahead (``CompiledKey.unextended``): their
states only grow between resets (``del``, ``put``), so a state that some read still to come
does not start with can be refused early.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from chorusdb.verify.history import OK, MalformedHistory, Operation
from chorusdb.verify.render import show_value


class _Illegal:
    """The result of a step that cannot happen."""

    def __repr__(self) -> str:
        return "ILLEGAL"


ILLEGAL: Final = _Illegal()

State = Any
"""A model state: any hashable value (each model documents its own)."""

StepFunction = Callable[[State], State]


@dataclass(frozen=True, slots=True)
class CompiledKey:
    """One key's operations ready for the search: ``steps[i]`` is operation ``i``'s step.

    Lookahead for models whose states only grow between resets (lists, appended strings):
    ``unextended`` maps a state to the bitset of reads (bit ``i`` for operation ``i``) whose
    result does not start with that state, and ``resets`` lists the operations that may shrink
    it (``del``, ``put``). A read still to come that no remaining reset can precede sees a
    longer state, so the search may enter a state only once those reads are linearized
    (``linearizability``). It prunes the search without changing its verdict.
    """

    initial: State
    steps: list[StepFunction]
    describe_state: Callable[[State], str]
    unextended: Callable[[State], int] | None = None
    resets: tuple[int, ...] = ()


class Model(ABC):
    """Base of the models: the ``f`` names it owns, its pure reads, and how it prunes.

    ``prunable_write`` is the ``f`` of a write whose unique value, once observed by a read, pins
    the write before that read; ``None`` when the model has none (see ``linearizability``).
    """

    name: str = ""
    updates: frozenset[str] = frozenset()
    reads: frozenset[str] = frozenset()
    prunable_write: str | None = None

    @abstractmethod
    def compile(self, operations: Sequence[Operation]) -> CompiledKey:
        """The initial state and one step function per operation, in the same order."""

    def observed(self, operation: Operation) -> Iterable[Hashable]:
        """The written values an ``ok`` read reveals (for pruning)."""
        return ()

    def is_observer(self, operation: Operation) -> bool:
        """Whether the operation's step never changes a state it accepts (a read)."""
        return operation.f in self.reads

    def can_prune(self, operations: Sequence[Operation]) -> bool:
        """Whether pruning is sound for these operations (given unique written values)."""
        return self.prunable_write is not None

    def _unexpected(self, operation: Operation) -> MalformedHistory:
        return MalformedHistory(
            f"record {operation.call_index}: {operation.f!r} is not an operation of the "
            f"{self.name} model"
        )


def _equal_to(expected: State) -> StepFunction:
    return lambda state: state if state == expected else ILLEGAL


def _constant(value: State) -> StepFunction:
    return lambda state: value


class RegisterModel(Model):
    name = "register"
    updates = frozenset({"set", "del", "cas"})
    reads = frozenset({"get"})
    prunable_write = "set"

    def compile(self, operations: Sequence[Operation]) -> CompiledKey:
        return CompiledKey(None, [self._step(o) for o in operations], show_value)

    def _step(self, operation: Operation) -> StepFunction:
        f, known = operation.f, operation.status == OK
        if f == "get":
            assert known
            return _equal_to(operation.output)
        if f == "set":
            return _constant(operation.input)
        if f == "del":
            return _constant(None)
        if f == "cas":
            expected, new = operation.input
            if not known:
                return lambda state: new if state == expected else state
            if operation.output:
                return lambda state: new if state == expected else ILLEGAL
            return lambda state: state if state != expected else ILLEGAL
        raise self._unexpected(operation)

    def observed(self, operation: Operation) -> Iterable[Hashable]:
        return () if operation.output is None else (operation.output,)

    def is_observer(self, operation: Operation) -> bool:
        # A compare that failed changed nothing: it only saw another value.
        failed_compare = operation.f == "cas" and operation.status == OK and not operation.output
        return operation.f in self.reads or failed_compare

    def can_prune(self, operations: Sequence[Operation]) -> bool:
        # An unobserved compare-and-set write can still explain a failed compare.
        return all(o.f != "cas" for o in operations)


class ListModel(Model):
    name = "list"
    updates = frozenset({"rpush", "del"})
    reads = frozenset({"lrange"})
    prunable_write = "rpush"

    def compile(self, operations: Sequence[Operation]) -> CompiledKey:
        # Interned sequences: state 0 is the empty list; state s extended by x is
        # children[(s, x)]. Read results are interned up front, so a read's step compares ints.
        # For the lookahead, ``extended_by[s]`` is the bitset of reads whose result starts with
        # state s, kept incrementally: a child keeps the reads of its parent that hold its last
        # element at its last index.
        reads = {i: o.output for i, o in enumerate(operations) if o.f == "lrange"}
        reads_with: dict[tuple[int, Hashable], int] = {}  # (index, element) -> reads bitset
        for i, content in reads.items():
            for index, element in enumerate(content):
                reads_with[(index, element)] = reads_with.get((index, element), 0) | 1 << i
        all_reads = sum(1 << i for i in reads)
        children: dict[tuple[int, Hashable], int] = {}
        parents: list[int] = [-1]
        elements: list[Hashable] = [None]
        lengths: list[int] = [0]
        extended_by: list[int] = [all_reads]
        unextended: list[int] = [0]

        def extend(state: int, *, element: Hashable) -> int:
            child = children.get((state, element))
            if child is None:
                child = children[(state, element)] = len(parents)
                parents.append(state)
                elements.append(element)
                lengths.append(lengths[state] + 1)
                same_next = reads_with.get((lengths[state], element), 0)
                extended_by.append(extended_by[state] & same_next)
                unextended.append(all_reads ^ extended_by[child])
            return child

        def intern(sequence: Iterable[Hashable]) -> int:
            state = 0
            for element in sequence:
                state = extend(state, element=element)
            return state

        def describe(state: State) -> str:
            assert isinstance(state, int)
            items: list[Hashable] = []
            while state:
                items.append(elements[state])
                state = parents[state]
            return show_value(tuple(reversed(items)))

        steps: list[StepFunction] = []
        for operation in operations:
            f = operation.f
            if f == "rpush":
                steps.append(partial(extend, element=operation.input))
            elif f == "lrange":
                assert operation.status == OK
                steps.append(_equal_to(intern(operation.output)))
            elif f == "del":
                steps.append(_constant(0))
            else:
                raise self._unexpected(operation)
        resets = tuple(i for i, o in enumerate(operations) if o.f == "del")
        return CompiledKey(0, steps, describe, unextended.__getitem__, resets)

    def observed(self, operation: Operation) -> Iterable[Hashable]:
        content: tuple[Hashable, ...] = operation.output
        return content


class CounterModel(Model):
    name = "counter"
    updates = frozenset({"incrby", "del"})
    reads = frozenset({"get"})

    def compile(self, operations: Sequence[Operation]) -> CompiledKey:
        return CompiledKey(0, [self._step(o) for o in operations], repr)

    def _step(self, operation: Operation) -> StepFunction:
        f, known = operation.f, operation.status == OK
        if f == "incrby":
            delta = operation.input
            assert isinstance(delta, int)
            if not known:
                return lambda state: state + delta
            total = operation.output
            return lambda state: total if state + delta == total else ILLEGAL
        if f == "get":
            assert known
            return _equal_to(counter_value(operation.output))
        if f == "del":
            return _constant(0)
        raise self._unexpected(operation)


def counter_value(read: Any) -> State:
    """The integer a counter read shows (``None``: the key is missing, 0); ``ILLEGAL`` if none."""
    if read is None:
        return 0
    if isinstance(read, int):
        return read
    try:
        return int(read)  # GET returns the counter as bytes, e.g. b"42"
    except (TypeError, ValueError):
        return ILLEGAL


class KvModel(Model):
    name = "kv"
    updates = frozenset({"put", "append"})
    reads = frozenset({"get"})

    def compile(self, operations: Sequence[Operation]) -> CompiledKey:
        # Interned strings, as in the list model: the memo then stores small ints, not copies
        # of ever longer strings. Lookahead as in the list model, with ``put`` as the reset:
        # ``extended_by`` of an appended string keeps the reads of its parent that hold the
        # suffix at the parent's length; of any other string, the reads that start with it.
        reads = {i: o.output or b"" for i, o in enumerate(operations) if o.f == "get"}
        suffixes = {o.input for o in operations if o.f == "append"}
        reads_with: dict[tuple[int, bytes], int] = {}  # (offset, suffix) -> reads bitset
        for i, content in reads.items():
            for suffix in suffixes:
                offset = content.find(suffix)
                while offset >= 0:
                    reads_with[(offset, suffix)] = reads_with.get((offset, suffix), 0) | 1 << i
                    offset = content.find(suffix, offset + 1)
        all_reads = sum(1 << i for i in reads)
        strings: list[bytes] = []
        ids: dict[bytes, int] = {}
        appended: dict[tuple[int, bytes], int] = {}
        unextended: list[int] = []

        def intern(value: bytes, extended_by: int | None = None) -> int:
            string_id = ids.get(value)
            if string_id is None:
                string_id = ids[value] = len(strings)
                strings.append(value)
                if extended_by is None:
                    extended_by = sum(1 << i for i, r in reads.items() if r.startswith(value))
                unextended.append(all_reads ^ extended_by)
            return string_id

        def append(state: int, *, suffix: bytes) -> int:
            result = appended.get((state, suffix))
            if result is None:
                base = strings[state]
                kept = (all_reads ^ unextended[state]) & reads_with.get((len(base), suffix), 0)
                result = appended[(state, suffix)] = intern(base + suffix, kept)
            return result

        initial = intern(b"")
        steps: list[StepFunction] = []
        for operation in operations:
            f = operation.f
            if f == "get":
                assert operation.status == OK
                steps.append(_equal_to(intern(operation.output or b"")))
            elif f == "put":
                steps.append(_constant(intern(operation.input)))
            elif f == "append":
                steps.append(partial(append, suffix=operation.input))
            else:
                raise self._unexpected(operation)
        resets = tuple(i for i, o in enumerate(operations) if o.f == "put")
        return CompiledKey(
            initial,
            steps,
            lambda state: show_value(strings[state]),
            unextended.__getitem__,
            resets,
        )


REGISTER: Final = RegisterModel()
LIST: Final = ListModel()
COUNTER: Final = CounterModel()
KV: Final = KvModel()
MODELS: Final = (REGISTER, LIST, COUNTER, KV)


def model_for(operations: Sequence[Operation]) -> Model:
    """The model a key's operations call for: the one owning its update ``f`` names.

    ``get`` and ``del`` belong to several models and do not decide; a key with nothing else
    is a register. Updates of two models on one key make the history malformed.
    """
    owners = {m.name: m for o in operations for m in MODELS if o.f in m.updates - {"del"}}
    owners |= {m.name: m for o in operations for m in MODELS if o.f in m.reads - {"get"}}
    if len(owners) > 1:
        raise MalformedHistory(f"one key used as {' and '.join(sorted(owners))}")
    return next(iter(owners.values()), REGISTER)
