"""The verdict of a ``chorusdb chaos`` run: the simulator's checkers on a real history.

``judge`` takes what the run recorded and read after heal (the history, every node's final
reads and digest, every node's ``CHORUS.DIVERGENT LIST ALL``) and calls ``verify.check_all``
with the mode's claims exactly as the simulator's runner does: the final state is the first
node's reads, with every node's digest and reads for convergence.

**Quarantined losses.** When the configuration may lose acknowledged writes (``may_lose``:
leader mode with W + Q <= N, or durability ``os``), a failover may drop one, but never silently:
it must sit in some node's divergent table. The simulator knows when each entry was
acknowledged; a real run does not, so an entry is matched to the history **by content**, which
unique values make exact:

- a list element by ``(key, element)`` in the entry's ``RPUSH`` / ``LPUSH``;
- a register value by ``(key, value)`` in the entry's ``SET``;
- a counter increment by ``(key, result)``: the log holds an ``INCRBY`` as the ``SET`` of the value
  it produced, which is exactly the reply its client acknowledged (the delta cannot be matched,
  the result can). A counter shortfall is excused only as far as matched increments account for
  it (``lost_writes``'s rule for covered increments).

Each matched acknowledged write gets a ``LossWindow`` covering only its own acknowledgement (its
node, its completion time), so the lost-writes checker reports it as *allowed*, naming where it
went. Every key a divergent entry touches counts as **damaged**: a read may have shown the entry
before it was removed, so on those keys the claims about what reads showed (linearizability,
consistent prefix, session) are not held, only list-append's ``no duplicates`` and ``no future
reads``; every other key keeps every claim (the simulator's rule, ``sim.runner``).

When the configuration promises no loss, a missing acknowledged write is an anomaly whether or
not a divergent table holds it (the report still says where it went).

``Verdict.lost_writes`` lists every acknowledged write the checker found missing, with where it
went (``Quarantined``: node, divergent entry id, log position) or nowhere ("silently gone").
``render`` prints the whole verdict with rich.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chorusdb.verify.check import FinalState, check_with_damage
from chorusdb.verify.history import OK, History, Op, Value
from chorusdb.verify.lost_writes import LossWindow
from chorusdb.verify.render import render_results, show_value
from chorusdb.verify.result import LOST, CheckResult

LOST_WRITES_CHECKER: Final = "lost-writes"
SILENTLY_GONE: Final = "silently gone"
# Field -> type of one entry of CHORUS.DIVERGENT LIST (core.divergent.item_reply).
DIVERGENT_FIELDS: Final = {
    "id": int, "epoch": int, "index": int, "leader": str, "removed_at_ms": int,
    "removed_by": str, "verified": bool, "resolution": str, "resolved_by": str,
    "resolved_at_ms": int, "command": bytes,
}
PUSH_COMMANDS: Final = frozenset({b"RPUSH", b"LPUSH"})
KEYLESS_COMMANDS: Final = frozenset({b"FLUSHDB", b"FLUSHALL"})   # they damage every key
MULTI_KEY_COMMANDS: Final = frozenset({b"DEL"})


def parse_divergent(reply: object) -> list[dict[str, Any]]:
    """``CHORUS.DIVERGENT LIST [ALL]``'s reply as one dict per entry, fields typed as
    ``DIVERGENT_FIELDS`` (``command`` stays bytes: keys and values are binary). Accepts each
    entry as a flat ``[field, value, ...]`` array or a RESP3 map; ``ValueError`` otherwise."""
    if not isinstance(reply, list | tuple):
        raise ValueError(f"expected an array of divergent entries, got {reply!r}")
    return [_parse_entry(item) for item in reply]


def _parse_entry(item: object) -> dict[str, Any]:
    if isinstance(item, dict):
        pairs = list(item.items())
    elif isinstance(item, list | tuple) and len(item) % 2 == 0:
        pairs = list(zip(item[0::2], item[1::2]))
    else:
        raise ValueError(f"expected a divergent entry of field names and values, got {item!r}")
    fields = {_text(name): value for name, value in pairs}
    entry: dict[str, Any] = {}
    for name, kind in DIVERGENT_FIELDS.items():
        if name not in fields:
            raise ValueError(f"the divergent entry has no field {name!r}: {item!r}")
        value = fields[name]
        try:
            if kind is int:
                entry[name] = int(value)
            elif kind is bool:
                entry[name] = bool(int(value))
            elif kind is str:
                entry[name] = _text(value)
            else:
                entry[name] = value if isinstance(value, bytes) else str(value).encode()
        except (TypeError, ValueError) as error:
            raise ValueError(f"divergent field {name!r} is {value!r}: {error}") from error
    return entry


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Quarantined:
    """Where a write went: divergent entry ``entry_id`` of ``node``, at ``epoch:index``."""

    node: str
    entry_id: int
    epoch: int
    index: int

    def __str__(self) -> str:
        return f"{self.node} divergent #{self.entry_id} ({self.epoch}:{self.index})"


@dataclass(frozen=True, slots=True)
class LostWrite:
    """An acknowledged write the final state lacks: which (``key``, ``what``: the checker's
    explanation), where it went (``where``; empty: silently gone) and whether the configuration
    excuses it (``excused``)."""

    key: bytes
    what: str
    where: tuple[Quarantined, ...]
    excused: bool

    @property
    def destination(self) -> str:
        return ", ".join(map(str, self.where)) or SILENTLY_GONE


@dataclass(frozen=True, slots=True)
class Verdict:
    """A run's verdict: ``valid`` when no checker left an anomaly unexplained and nothing else
    went wrong (``problems``: malformed replies, say)."""

    valid: bool
    mode: str
    outcomes: Mapping[str, int]           # client operations (final reads too) by outcome
    anomalies: Mapping[str, int]          # checker -> unexplained anomalies
    allowed: Mapping[str, int]            # checker -> anomalies the configuration excuses
    witness: str                          # verify.render_results of the failing checkers
    lost_writes: tuple[LostWrite, ...]
    damaged_keys: int                     # keys a divergent entry touched (-1: every key)
    problems: tuple[str, ...] = ()
    results: tuple[CheckResult, ...] = field(default=(), repr=False)


class _DivergentIndex:
    """Every divergent entry of every node, by the writes it holds and the keys it touches."""

    def __init__(self, divergent: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self.writes: dict[tuple[bytes, bytes], list[Quarantined]] = {}
        self.keys: set[bytes] | None = set()       # None: an entry touched every key
        for node, entries in sorted(divergent.items()):
            for entry in entries:
                self._add(node, entry)

    def _add(self, node: str, entry: Mapping[str, Any]) -> None:
        where = Quarantined(node, entry["id"], entry["epoch"], entry["index"])
        name, *args = entry["command"].split(b" ")
        name = name.upper()
        if name in KEYLESS_COMMANDS:
            self.keys = None
            return
        touched = args if name in MULTI_KEY_COMMANDS else args[:1]
        if self.keys is not None:
            self.keys.update(touched)
        if name == b"SET" and len(args) >= 2:
            self.writes.setdefault((args[0], args[1]), []).append(where)
        elif name in PUSH_COMMANDS:
            for element in args[1:]:
                self.writes.setdefault((args[0], element), []).append(where)

    def where(self, key: bytes, f: str, argument: Value, result: Value) -> tuple[Quarantined, ...]:
        """The entries holding the acknowledged write ``f`` on ``key`` (module docstring)."""
        if f in ("set", "rpush") and isinstance(argument, bytes):
            return tuple(self.writes.get((key, argument), ()))
        if f == "incrby" and isinstance(result, int):
            return tuple(self.writes.get((key, str(result).encode()), ()))
        return ()


def judge(history: History, final_reads: Mapping[str, Mapping[bytes, Value]],
          digests: Mapping[str, str], mode: str, claims: Iterable[str],
          divergent: Mapping[str, Sequence[Mapping[str, Any]]], may_lose: bool, *,
          problems: Sequence[str] = ()) -> Verdict:
    """The verdict on a run (module docstring). ``final_reads``: node -> key -> value, nodes in
    the order the run read them (the first is the final state, as in the simulator)."""
    index = _DivergentIndex(divergent)
    acknowledged = [o for o in history.operations()
                    if o.status == OK and o.f in ("set", "rpush", "incrby")]
    windows = []
    if may_lose:
        for operation in acknowledged:
            where = index.where(operation.key or b"", operation.f, operation.input,
                                operation.output)
            if where:
                completion = operation.completion
                assert completion is not None
                windows.append(LossWindow(
                    node=operation.node, start_time=completion.time, end_time=completion.time,
                    reason=f"may lose acknowledged writes; quarantined in "
                           f"{', '.join(map(str, where))}"))
    first_node = next(iter(final_reads))
    final_state = FinalState(values=final_reads[first_node], digests=digests, dumps=final_reads)
    damaged: frozenset[bytes] | None = frozenset()
    if may_lose:
        damaged = None if index.keys is None else frozenset(index.keys)
    results = check_with_damage(history, final_state=final_state, claims=frozenset(claims),
                                loss_windows=windows, damaged=damaged)
    anomalies: Counter[str] = Counter()
    allowed: Counter[str] = Counter()
    for result in results:
        anomalies[result.name] += len(result.anomalies)
        if result.allowed:
            allowed[result.name] += len(result.allowed)
    outcomes = Counter(operation.status for operation in history.operations())
    return Verdict(
        valid=not problems and all(result.valid for result in results),
        mode=mode, outcomes=dict(outcomes), anomalies=dict(anomalies), allowed=dict(allowed),
        witness=render_results([result for result in results if not result.valid]),
        lost_writes=_lost_writes(history, results, index), damaged_keys=-1 if damaged is None
        else len(damaged), problems=tuple(problems), results=tuple(results))


def _lost_writes(history: History, results: Iterable[CheckResult],
                 index: _DivergentIndex) -> tuple[LostWrite, ...]:
    """One ``LostWrite`` per ``lost`` anomaly of the lost-writes checker: an element or a
    register by the write its witness shows, a counter by every acknowledged increment on it."""
    lost = []
    by_key = history.operations_by_key()
    for result in results:
        if result.name != LOST_WRITES_CHECKER:
            continue
        for anomaly in (*result.anomalies, *result.allowed):
            if anomaly.kind != LOST or anomaly.key is None:
                continue
            key = anomaly.key
            completions = [r for r in anomaly.witness if r.type == OK]
            if completions:
                where = _where_record(index, completions[-1])
                what = anomaly.explanation
            else:       # a counter: its shortfall, and every increment found quarantined
                where = tuple(place for o in by_key.get(key, ()) if o.f == "incrby"
                              and o.status == OK
                              for place in index.where(key, o.f, o.input, o.output))
                what = (f"{anomaly.explanation} (increments are found by their result, which "
                        f"the log holds as a SET)")
            lost.append(LostWrite(key, what, where, excused=anomaly.allowed_by is not None))
    return tuple(lost)


def _where_record(index: _DivergentIndex, completion: Op) -> tuple[Quarantined, ...]:
    assert completion.key is not None
    return index.where(completion.key, completion.f, completion.value, completion.value)


def render(verdict: Verdict, console: Console,
           extra_rows: Iterable[tuple[str, str]] = ()) -> None:
    """Print ``verdict``: a summary (operations, the caller's ``extra_rows`` such as faults
    injected and failover times), anomalies per checker, lost writes and where they went, the
    witnesses of the failing checkers, and the verdict line. Text from the run is printed as
    it is (never read as rich markup: values hold brackets)."""
    summary = Table(title="chaos run", box=box.SIMPLE_HEAD, show_header=False)
    summary.add_column("what", style="bold")
    summary.add_column("value")
    summary.add_row("mode", verdict.mode)
    outcomes = verdict.outcomes
    summary.add_row("operations", f"{outcomes.get(OK, 0)} ok, {outcomes.get('fail', 0)} failed, "
                                  f"{outcomes.get('info', 0)} unknown")
    for label, value in extra_rows:
        summary.add_row(Text(label), Text(value))
    if verdict.damaged_keys:
        summary.add_row("damaged keys", "every key" if verdict.damaged_keys < 0
                        else f"{verdict.damaged_keys} (touched by divergent entries: read "
                             f"claims not held there)")
    console.print(summary)
    checkers = Table(title="checkers", box=box.SIMPLE_HEAD)
    for column in ("checker", "anomalies", "allowed"):
        checkers.add_column(column)
    for name, count in verdict.anomalies.items():
        checkers.add_row(name, f"[red]{count}[/red]" if count else "0",
                         str(verdict.allowed.get(name, 0)))
    console.print(checkers)
    if verdict.lost_writes:
        lost = Table(title="acknowledged writes missing", box=box.SIMPLE_HEAD)
        for column in ("key", "write", "went to", "excused"):
            lost.add_column(column, overflow="fold")
        for item in verdict.lost_writes:
            lost.add_row(Text(show_value(item.key)), Text(item.what), Text(item.destination),
                         Text("yes") if item.excused else Text("no", style="red"))
        console.print(lost)
    for problem in verdict.problems:
        console.print(Text.assemble(("problem: ", "red"), problem))
    if verdict.witness:
        console.print(verdict.witness, markup=False, highlight=False)
    if verdict.valid:
        console.print("[bold green]VALID[/bold green]: no anomaly left unexplained")
    else:
        console.print("[bold red]INVALID[/bold red]: see the anomalies above")
