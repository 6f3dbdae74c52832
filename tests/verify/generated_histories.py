"""Linearizable histories by construction, and mutants that cannot be.

``generate`` runs a few client processes against one atomic object (a register or a list) in
a random interleaving: each operation is invoked, takes effect at one instant (atomically), and
completes later; some time out instead (``info``: the effect happened, or never will) and some
never complete. Because every effect happens at one instant between invocation and completion,
the recorded history is linearizable by construction; the final value is returned too.

``mutate_read`` changes the result of one ``ok`` read so that no linearization can exist, using
only arguments that are proofs (unique written values make them so):

- register: read a value whose write was invoked after the read returned (the future); or a
  value overwritten before the read began (w1 completed before w2 began, w2 completed before the
  read began); or a value nobody wrote;
- list: drop the last element although its push completed before the read began; swap two
  elements whose pushes were ordered in real time; or append an element nobody pushed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from chorusdb.verify.history import OK, History, HistoryRecorder, Operation, Value

NEVER_WRITTEN = b"never-written"
_WRITE_AND_READ = {"register": ("set", "get"), "list": ("rpush", "lrange")}


@dataclass
class _InFlight:
    f: str
    argument: Value
    applied: bool = False
    result: Value = None


def generate(
    rng: random.Random, *, kind: str, processes: int = 4, operations: int = 40
) -> tuple[History, Value]:
    """A linearizable history of ``kind`` ("register" or "list") on ``b"k"``; its final value."""
    recorder = HistoryRecorder()
    state: Value = None if kind == "register" else ()
    in_flight: dict[int, _InFlight] = {}
    idle = list(range(processes))
    next_process = processes
    invoked = 0
    time = 0
    while invoked < operations or any(op.applied for op in in_flight.values()):
        time += rng.randint(1, 1000)
        choice = rng.random()
        if idle and invoked < operations and choice < 0.35:
            process = idle.pop(rng.randrange(len(idle)))
            write = rng.random() < 0.5
            f = _WRITE_AND_READ[kind][0 if write else 1]
            argument = f"c{process}-{invoked}".encode() if write else None
            recorder.invoke(process, f, b"k", argument, time=time)
            in_flight[process] = _InFlight(f, argument)
            invoked += 1
            continue
        if not in_flight:
            continue
        process = rng.choice(sorted(in_flight))
        operation = in_flight[process]
        if not operation.applied and choice < 0.75:
            operation.applied = True
            if operation.f == "set":
                state = operation.argument
            elif operation.f == "rpush":
                assert isinstance(state, tuple)
                state = (*state, operation.argument)
            else:
                operation.result = state
        elif operation.applied and choice < 0.95:
            del in_flight[process]
            idle.append(process)
            if operation.f in ("get", "lrange"):
                recorder.ok(process, time=time, value=operation.result)
            else:
                recorder.ok(process, time=time)
        elif choice >= 0.95:
            # A timeout: the effect happened already or never will; a fresh process carries on.
            del in_flight[process]
            recorder.info(process, time=time, error="timeout")
            idle.append(next_process)
            next_process += 1
    return recorder.history, state


def mutate_read(rng: random.Random, history: History) -> History | None:
    """``history`` with one ``ok`` read changed so that it is not linearizable (module doc)."""
    operations = history.operations()
    reads = [o for o in operations if o.f in ("get", "lrange") and o.status == OK]
    if not reads:
        return None
    read = rng.choice(reads)
    candidates = (
        _register_mutants(read, operations) if read.f == "get" else _list_mutants(read, operations)
    )
    assert read.completion is not None
    mutant = candidates[rng.randrange(len(candidates))]
    return History(
        replace(record, value=mutant) if record is read.completion else record
        for record in history
    )


def _acknowledged_before(operation: Operation, index: int) -> bool:
    """Whether ``operation`` completed with ``ok`` before record ``index``."""
    returned = operation.return_index
    return operation.status == OK and returned is not None and returned < index


def _register_mutants(read: Operation, operations: list[Operation]) -> list[Value]:
    assert read.return_index is not None
    writes = [o for o in operations if o.f == "set"]
    future = [w.input for w in writes if w.call_index > read.return_index]
    done = [w for w in writes if _acknowledged_before(w, read.call_index)]
    overwritten = [
        w1.input for w1 in done if any(_acknowledged_before(w1, w2.call_index) for w2 in done)
    ]
    if done:
        overwritten.append(None)  # the initial value, gone once a write completed
    return [v for v in future + overwritten if v != read.output] or [NEVER_WRITTEN]


def _list_mutants(read: Operation, operations: list[Operation]) -> list[Value]:
    content: tuple[bytes, ...] = read.output
    push_of = {o.input: o for o in operations if o.f == "rpush"}
    mutants: list[Value] = [(*content, NEVER_WRITTEN)]
    if content:
        if _acknowledged_before(push_of[content[-1]], read.call_index):
            mutants.append(content[:-1])
    for i in range(len(content) - 1):
        first, second = push_of[content[i]], push_of[content[i + 1]]
        if _acknowledged_before(first, second.call_index):
            mutants.append((*content[:i], content[i + 1], content[i], *content[i + 2 :]))
    return mutants
